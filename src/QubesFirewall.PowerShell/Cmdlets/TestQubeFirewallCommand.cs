using System.Management.Automation;
using QubesFirewall.Engine;
using QubesFirewall.Engine.Model;
using QubesFirewall.Engine.Planning;

namespace QubesFirewall.PowerShell.Cmdlets;

/// <summary>
/// Audits qubes' firewalls: what will not work as the user thinks (rules after a catch-all, rules
/// nobody enforces, host names, /0 networks, expiry, rules qubesd refuses, lists the Qube Manager
/// cannot show), as findings with a severity, a message and a fix. Reads only, and only dom0 facts (the inventory,
/// rule lists, features) unless -Deep, which also reads inside the running qubes: their agents' status and the
/// hook files earlier versions wrote.
/// </summary>
[Cmdlet(VerbsDiagnostic.Test, "QubeFirewall")]
[OutputType(typeof(AuditFinding))]
public sealed class TestQubeFirewallCommand : QubeCmdlet
{
    private AuditContext? _context;
    private bool _named;
    private readonly HashSet<string> _audited = new(StringComparer.Ordinal); // each qube once per invocation (piped rules name it many times)

    [Parameter(Position = 0, ValueFromPipeline = true, ValueFromPipelineByPropertyName = true)]
    [Alias("Name")]
    [SupportsWildcards]
    [ArgumentCompleter(typeof(QubeNameCompleter))]
    [ValidateNotNullOrEmpty]
    public string[]? VMName { get; set; }

    /// <summary>The least severe finding shown: Warning (the default) shows errors and warnings, Info everything.</summary>
    [Parameter]
    public AuditSeverity Severity { get; set; } = AuditSeverity.Warning;

    /// <summary>Also reads inside the running qubes (one bounded qvm-run read each): each agent's status, and the hook files for blocks of earlier versions.</summary>
    [Parameter]
    public SwitchParameter Deep { get; set; }

    // dom0 facts only; the checks that look inside qubes read through the backend, and only with -Deep
    private AuditContext Context => _context ??= AuditContext.Of(Backend, Now, Deep);

    protected override void ProcessRecord()
    {
        if (VMName is null) return;
        _named = true;
        foreach (var name in VMName)
        {
            var wildcard = WildcardPattern.ContainsWildcardCharacters(name) ? NamePattern(name) : null;
            if (WildcardPattern.ContainsWildcardCharacters(name) && wildcard is null) continue;
            if (!TryEngine(() => Resolve(name, wildcard), out var qubes)) continue;
            foreach (var qube in qubes)
            {
                if (qube.Class == QubeClass.AdminVM) { WriteVerbose("dom0 has no Qubes firewall; skipped."); continue; }
                if (!_audited.Add(qube.Name)) continue;
                if (TryEngine(() => FirewallAudit.Audit(Context, qube), out var findings)) Write(findings);
            }
        }
    }

    protected override void EndProcessing()
    {
        if (!_named)
        {
            if (TryEngine(() => FirewallAudit.DefaultTargets(Context.Inventory), out var targets))
                foreach (var qube in targets)
                    if (TryEngine(() => FirewallAudit.Audit(Context, qube), out var findings)) Write(findings);
        }
        base.EndProcessing();
    }

    // Severity sorts Error first: a finding is shown when it is at least as severe as -Severity.
    private void Write(IEnumerable<AuditFinding> findings) => WriteObject(findings.Where(f => f.Severity <= Severity), enumerateCollection: true);

    private IReadOnlyList<Qube> Resolve(string name, WildcardPattern? wildcard)
    {
        var inventory = Context.Inventory;
        if (wildcard is null)
        {
            Engine.Validation.QubeName.Validate(name);
            return [inventory.Find(name) ?? throw QubesInventory.NotFound(name, Backend.Description)];
        }
        return inventory.Qubes.Where(q => q.Class != QubeClass.AdminVM && wildcard.IsMatch(q.Name)).ToList();
    }
}

using System.Management.Automation;
using QubesFirewall.Engine;
using QubesFirewall.Engine.Deployment;
using QubesFirewall.Engine.Model;
using QubesFirewall.Engine.Planning;

namespace QubesFirewall.PowerShell.Cmdlets;

/// <summary>
/// Sets a qube's whole rule list: the rules given (parameters, rule text, piped lines or objects) become the
/// list, in their order, written once per qube. -WhatIf shows the diff (kept, added, removed, moved). An empty
/// input is refused unless -AllowEmpty. A wildcard -VMName sets the same list on every qube it matches, in one
/// ShouldProcess.
/// </summary>
// No default parameter set, as Add-QubeFirewallRule: the set is picked per pipeline object.
[Cmdlet(VerbsCommon.Set, "QubeFirewallRule", SupportsShouldProcess = true)]
[OutputType(typeof(QubeFirewallRule))]
public sealed class SetQubeFirewallRuleCommand : FirewallRuleInputCmdlet
{
    private readonly Dictionary<string, List<FirewallRule>> _pending = new(StringComparer.Ordinal);
    private readonly HashSet<string> _refused = new(StringComparer.Ordinal);

    [Parameter(Mandatory = true, Position = 0, ValueFromPipelineByPropertyName = true)]
    [Alias("Name")]
    [SupportsWildcards]
    [ArgumentCompleter(typeof(QubeNameCompleter))]
    [ValidateNotNullOrEmpty]
    public string VMName { get; set; } = "";

    /// <summary>Lets an empty input through (<c>@() | Set-QubeFirewallRule work -AllowEmpty</c>): the list then drops every connection of the qube.</summary>
    // A third parameter set for it alone would take piped objects away from the Fields set.
    [Parameter]
    public SwitchParameter AllowEmpty { get; set; }

    [Parameter]
    public SwitchParameter PassThru { get; set; }

    protected override void ProcessRecord()
    {
        if (!_pending.TryGetValue(VMName, out var list)) _pending[VMName] = list = [];
        try
        {
            if (ReadRule() is { } rule) list.Add(rule);
        }
        catch (QubesFirewallException ex)
        {
            _refused.Add(VMName);
            WriteError(ToErrorRecord(ex));
        }
    }

    protected override void EndProcessing()
    {
        // Nothing piped in (an empty file, @()): the qube named on the command line gets an empty list.
        if (_pending.Count == 0 && MyInvocation.BoundParameters.ContainsKey(nameof(VMName))) _pending[VMName] = [];
        foreach (var (pattern, rules) in WithProgress(_pending, "Setting firewall rules", p => p.Key))
        {
            if (_refused.Contains(pattern))
            {
                WriteError(ToErrorRecord(new QubesFirewallException(ErrorIds.RulesNotSet, FailureKind.InvalidArgument,
                    $"The list of '{RuleGrammar.Printable(pattern)}' was not set: some of its input was invalid (see the errors above). Fix it and run the command again.", pattern)));
                continue;
            }
            if (rules.Count == 0 && !AllowEmpty)
            {
                WriteError(ToErrorRecord(FirewallSet.EmptyRefused(pattern)));
                continue;
            }
            if (Targets(pattern) is not { } qubes) continue;
            var plans = new List<FirewallSetPlan>();
            foreach (var qube in qubes)
                if (TryEngine(() => FirewallSet.Plan(Backend, qube, rules, AllowEmpty, Now), out var plan)) plans.Add(plan);
            if (plans.Count != qubes.Count) continue; // the same list on every match, or on none
            foreach (var duplicate in plans.SelectMany(p => p.Duplicates).DistinctBy(r => r.Text))
                WriteWarning($"'{duplicate.Text}' is given more than once; the list holds it once, at its first place.");
            foreach (var plan in plans) WarnIfNotEnforced(plan.VMName);

            var target = WildcardPattern.ContainsWildcardCharacters(pattern) ? $"{pattern} ({string.Join(", ", qubes)})" : pattern;
            if (Deploy(FirewallSet.AsPlan(plans, target)) is not { Failure: null } done) continue;
            foreach (var plan in plans)
            {
                var set = done.Result.Steps.FirstOrDefault(s => ReferenceEquals(s.Step.Firewall, plan.Change))?.FirewallOutcome?.Rules ?? plan.Rules;
                WriteVerbose(plan.IsNoOp ? $"{plan.VMName}: unchanged." : $"{plan.VMName}: set {set.Count} rule(s).");
                if (PassThru)
                    for (var i = 0; i < set.Count; i++) WriteObject(new QubeFirewallRule(plan.VMName, i, set[i]));
            }
        }
        base.EndProcessing();
    }

    /// <summary>The qubes a -VMName names: a wildcard's matches (a warning when none), or the one qube (QubeNotFound otherwise); never dom0.</summary>
    private IReadOnlyList<string>? Targets(string pattern)
    {
        if (!TryEngine(() => Backend.GetInventory(), out var inventory)) return null;
        if (QubePattern(pattern, inventory) is not { } wildcard) return null;
        var qubes = inventory.Qubes.Where(q => q.Class != QubeClass.AdminVM && wildcard.IsMatch(q.Name)).Select(q => q.Name).ToList();
        if (qubes.Count > 0) return qubes;
        if (inventory.Find(pattern) is { Class: QubeClass.AdminVM })
            WriteError(ToErrorRecord(new QubesFirewallException(ErrorIds.NoFirewall, FailureKind.InvalidOperation, "dom0 has no Qubes firewall; nothing was set.", pattern)));
        else
            WriteWarning($"No qube matches '{RuleGrammar.Printable(pattern)}'; nothing was set.");
        return null;
    }
}

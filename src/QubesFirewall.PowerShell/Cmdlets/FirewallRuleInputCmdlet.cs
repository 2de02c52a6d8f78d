using System.Management.Automation;
using QubesFirewall.Engine;
using QubesFirewall.Engine.Model;
using QubesFirewall.Engine.Planning;

namespace QubesFirewall.PowerShell.Cmdlets;

/// <summary>
/// What Add- and Set-QubeFirewallRule share: a rule given by its fields (parameters, or the properties of piped
/// objects: CSV rows, another qube's rules) or by its text (-Rule, or lines piped in), and the warning when
/// the rules go to a qube whose rules nobody enforces.
/// </summary>
public abstract class FirewallRuleInputCmdlet : QubeCmdlet
{
    protected const string FieldsSet = "Fields";
    protected const string TextSet = "Text";

    private readonly HashSet<string> _warned = new(StringComparer.Ordinal);

    [Parameter(Mandatory = true, ParameterSetName = FieldsSet, ValueFromPipelineByPropertyName = true)]
    public RuleAction Action { get; set; }

    [Parameter(ParameterSetName = FieldsSet, ValueFromPipelineByPropertyName = true)]
    [EmptyAsNull]
    public RuleProtocol? Protocol { get; set; }

    [Parameter(ParameterSetName = FieldsSet, ValueFromPipelineByPropertyName = true)]
    [Alias("RemoteAddress")]
    [EmptyAsNull]
    public string? DstHost { get; set; }

    [Parameter(ParameterSetName = FieldsSet, ValueFromPipelineByPropertyName = true)]
    [Alias("RemotePort")]
    [EmptyAsNull]
    public string? DstPorts { get; set; }

    [Parameter(ParameterSetName = FieldsSet, ValueFromPipelineByPropertyName = true)]
    [EmptyAsNull]
    public int? IcmpType { get; set; }

    [Parameter(ParameterSetName = FieldsSet, ValueFromPipelineByPropertyName = true)]
    [EmptyAsNull]
    public SpecialTarget? SpecialTarget { get; set; }

    /// <summary>A DateTime, a TimeSpan from now, Unix seconds or "+SECONDS".</summary>
    [Parameter(ParameterSetName = FieldsSet, ValueFromPipelineByPropertyName = true)]
    [EmptyAsNull]
    public object? Expire { get; set; }

    [Parameter(ParameterSetName = FieldsSet, ValueFromPipelineByPropertyName = true)]
    [Alias("Description")]
    [EmptyAsNull]
    public string? Comment { get; set; }

    /// <summary>One rule in the qvm-firewall / Admin API text form.</summary>
    [Parameter(Mandatory = true, Position = 1, ParameterSetName = TextSet, ValueFromPipeline = true)]
    [AllowEmptyString]
    [RuleLineTransformation]
    public RuleLine Rule { get; set; } = new("");

    /// <summary>The rule this input gives; null for a blank line or a # comment of a rules file (and for input of other parameter sets).</summary>
    protected FirewallRule? ReadRule()
    {
        if (ParameterSetName == TextSet)
        {
            var line = Rule.Text;
            if (string.IsNullOrWhiteSpace(line) || line.TrimStart().StartsWith('#')) return null;
            return RuleText.Parse(line.Trim(), Now);
        }
        if (ParameterSetName != FieldsSet) return null;
        return FirewallRule.Create(Action, Protocol, DstHost, DstPorts, IcmpType, SpecialTarget, ExpireArgument.ToUnixTime(Expire, Now), Comment);
    }

    /// <summary>
    /// Warns, once per qube and invocation, when its rules are not enforced (no netvm, a Whonix gateway, a network
    /// qube without the qubes-firewall service), in the audit's own words (<see cref="Enforcement"/>).
    /// </summary>
    protected void WarnIfNotEnforced(string vmName)
    {
        if (!_warned.Add(vmName)) return;
        if (!TryEngine(() => Backend.GetInventory(), out var inventory) || inventory.Find(vmName) is not { } qube) return;
        var who = Enforcement.Of(inventory, qube);
        if (!who.Enforced) WriteWarning(who.Message);
    }
}

using System.Management.Automation;
using QubesFirewall.Engine;
using QubesFirewall.Engine.Model;
using QubesFirewall.Engine.Planning;

namespace QubesFirewall.PowerShell.Cmdlets;

/// <summary>
/// Turns IPv6 on or off for a qube (and, by inheritance, the qubes behind it), or lets it inherit:
/// the qube's <c>ipv6</c> feature set to <c>1</c>, to the empty string, or removed.
/// </summary>
[Cmdlet(VerbsCommon.Set, "QubeIPv6", SupportsShouldProcess = true, DefaultParameterSetName = EnabledSet)]
[OutputType(typeof(Qube))]
public sealed class SetQubeIPv6Command : QubeNamesCmdlet
{
    private const string EnabledSet = "Enabled";
    private const string InheritSet = "Inherit";

    /// <summary>$true: feature ipv6 = 1; $false: feature ipv6 = '' (off, whatever the network qube says).</summary>
    [Parameter(Mandatory = true, Position = 1, ParameterSetName = EnabledSet)]
    public bool Enabled { get; set; }

    /// <summary>Removes the feature: the first qube up the netvm chain that has it decides.</summary>
    [Parameter(Mandatory = true, ParameterSetName = InheritSet)]
    public SwitchParameter Inherit { get; set; }

    [Parameter]
    public SwitchParameter PassThru { get; set; }

    protected override void ProcessRecord()
    {
        var setting = ParameterSetName == InheritSet ? IPv6Setting.Inherit : Enabled ? IPv6Setting.Enabled : IPv6Setting.Disabled;
        foreach (var name in VMName)
        {
            if (!TryEngine(() => IPv6Planner.Plan(Backend.GetInventory(), name, setting), out var change)) continue;
            if (!change.IsChange)
            {
                WriteVerbose($"{change.VMName}: feature ipv6 is already {(change.NewValue is null ? "absent" : $"'{change.NewValue}'")}; nothing to change.");
                foreach (var warning in change.Warnings) WriteWarning(warning);
            }
            // The links and forwards whose IPv6 part the change turns on or off are part of the plan: -WhatIf shows them.
            else if (!TryEngine(() => IPv6Planner.AsPlan(change, IPv6Effects.Of(Backend.GetInventory(), change), Now), out var plan)
                || Deploy(plan) is not { Failure: null })
                continue;
            WriteVerbose($"{change.VMName}: IPv6 is {(change.EnabledAfter ? "on" : "off")}" +
                (change.DecidedBy is null ? " (no qube along its netvm chain has the ipv6 feature)." : change.DecidedBy == change.VMName ? " (its own ipv6 feature)." : $" (inherited from {change.DecidedBy})."));
            if (PassThru && TryEngine(() => Backend.GetInventory().Get(change.VMName), out var qube)) WriteObject(qube);
        }
    }
}

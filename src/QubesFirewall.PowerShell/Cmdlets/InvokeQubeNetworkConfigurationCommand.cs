using System.Management.Automation;
using QubesFirewall.Engine.Configuration;
using QubesFirewall.Engine.Deployment;
using QubesFirewall.Engine.Planning;

namespace QubesFirewall.PowerShell.Cmdlets;

/// <summary>
/// Makes the system match a configuration file for the qubes it names: one plan, one ShouldProcess showing every
/// change, deployed as one rollout (a failure puts everything back). Running it again changes nothing.
/// </summary>
[Cmdlet(VerbsLifecycle.Invoke, "QubeNetworkConfiguration", SupportsShouldProcess = true, ConfirmImpact = ConfirmImpact.High)]
[OutputType(typeof(DeploymentStepResult))]
public sealed class InvokeQubeNetworkConfigurationCommand : NetworkConfigurationCmdlet
{
    /// <summary>Also remove the forwards, links and bindings of the named qubes that the file does not list.</summary>
    [Parameter]
    public SwitchParameter Prune { get; set; }


    /// <summary>Take qubes off a Whonix gateway or VPN qube without asking (each such move asks otherwise).</summary>
    [Parameter]
    public SwitchParameter AllowGatewayChange { get; set; }

    [Parameter]
    public SwitchParameter PassThru { get; set; }

    /// <summary>Start the halted qubes the plan must reach (network qubes first) instead of refusing them.</summary>
    [Parameter]
    public SwitchParameter Start { get; set; }

    protected override void ProcessRecord()
    {
        if (!TryReadConfiguration(out var configuration, out var path)) return;
        ConfigurationPlan Plan() => ConfigurationPlanner.Plan(SystemReader.For(Backend), configuration, Prune,
            DeploymentOptions.For(Backend, Now));
        if (!TryEngine(Plan, out var first)) return;
        if (first is { IsComplete: true, IsEmpty: true })
        {
            foreach (var warning in first.Warnings) WriteWarning(warning);
            WriteVerbose($"{path}: the system already matches the file; nothing to change.");
            return;
        }
        var outcome = Deploy(first, Start, Plan, (plan, options, again) => ConfigurationPlanner.Apply(Backend, plan, options, again), o => o.Failure,
            plan => AllowGatewayChange || plan.SensitiveMoves.All(move =>
                ShouldContinue($"{move.Reason} ({move.VMName}: {move.From} -> {move.To}) Continue?", "Leave a Whonix gateway or VPN qube?")));
        if (outcome.Result is null) return; // not deployed
        if (PassThru) WriteObject(outcome.Result.Steps, enumerateCollection: true);
        if (outcome.Failure is null) WriteVerbose($"{path}: applied {outcome.Result.Steps.Count} change(s).");
    }
}

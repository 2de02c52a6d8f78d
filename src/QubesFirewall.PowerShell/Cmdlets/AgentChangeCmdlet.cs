using System.Management.Automation;
using QubesFirewall.Engine;
using QubesFirewall.Engine.Planning;

namespace QubesFirewall.PowerShell.Cmdlets;

/// <summary>
/// What the cmdlets that change agent keys share (port forwards, inter-qube links): after the features are set, whether
/// and how long to ask the agents of the running qubes whether they loaded the new generation.
/// </summary>
public abstract class AgentChangeCmdlet : QubeCmdlet
{
    /// <summary>Through the agent: set the features and return, without asking the qubes' agents whether they applied them.</summary>
    [Parameter]
    public SwitchParameter NoWait { get; set; }

    /// <summary>How long to wait for the agents' confirmation, in seconds; a slow qube (a loaded system, a big ruleset) may need more.</summary>
    [Parameter]
    [ValidateRange(1, 3600)]
    public int TimeoutSeconds { get; set; } = (int)DeploymentOptions.DefaultAgentWait.TotalSeconds;

    protected override void BeginProcessing()
    {
        // -NoWait asks no agent, so a timeout for the answer would be silently meaningless
        if (NoWait && MyInvocation.BoundParameters.ContainsKey(nameof(TimeoutSeconds)))
            ThrowTerminatingError(ToErrorRecord(new QubesFirewallException(ErrorIds.NoWaitWithTimeout, FailureKind.InvalidArgument,
                "-NoWait asks no agent, so there is no answer to wait -TimeoutSeconds for: give one of them. Nothing was changed.", TimeoutSeconds)));
        base.BeginProcessing();
    }

    /// <summary>The options of a change: the time, whether the qubes must run, and how long to wait for the agents (zero: -NoWait).</summary>
    protected DeploymentOptions ChangeOptions() =>
        DeploymentOptions.For(Backend, Now).WaitingForAgents(NoWait ? TimeSpan.Zero : TimeSpan.FromSeconds(TimeoutSeconds));
}

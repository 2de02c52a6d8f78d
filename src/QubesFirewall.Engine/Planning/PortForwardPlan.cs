using System.Globalization;
using System.Text;
using QubesFirewall.Engine.Backends;
using QubesFirewall.Engine.Deployment;
using QubesFirewall.Engine.Model;
using QubesFirewall.Engine.Scripts;

namespace QubesFirewall.Engine.Planning;

/// <summary>
/// An ordered list of changes that adds, updates or removes one port forward: the feature of the
/// target, then for each qube on the way its hook file (managed block) and a run of its script.
/// Adding opens from the inside out (target first, the outermost hop last), removing closes from the
/// outside in (outermost hop first, the declaration last), so a failure half way leaves the port shut at
/// the edge. Deployed by <see cref="Rollout"/>: a failure half way puts every change back, feature included.
/// Deterministic: the same inventory, files and request give the same plan.
/// </summary>
public sealed record PortForwardPlan : IDeploymentPlan
{
    /// <summary>Add, Update, Reapply (the same forward declared again) or Remove.</summary>
    public required PlanOperation Operation { get; init; }

    /// <summary>The forward added/updated, or the one removed (null when the removed feature could not be read).</summary>
    public PortForward? Forward { get; init; }

    /// <summary>For an update: the declaration it replaces.</summary>
    public PortForward? Previous { get; init; }

    public required string VMName { get; init; }

    public required string FeatureName { get; init; }

    /// <summary>The network qubes of the forward, outermost first (empty when it cannot be resolved).</summary>
    public IReadOnlyList<string> Hops { get; init; } = [];

    public IReadOnlyList<DeploymentStep> Steps { get; init; } = [];

    public IReadOnlyList<string> Warnings { get; init; } = [];

    /// <summary>The ShouldProcess target: <c>tcp/443 -> work:443 (sys-net -> sys-firewall -> work)</c>.</summary>
    public required string Target { get; init; }

    /// <summary>The address families the forward is generated for (<c>IPv4</c>, <c>IPv4 and IPv6</c>, <c>IPv6</c>); empty for a removal.</summary>
    public string AddressFamilies { get; init; } = "";

    /// <summary>
    /// The qubes the change reaches that are not running, outermost first: the network qubes on the way
    /// (their rules are loaded now) and the qubes keeping the hook files (read and written inside them, live).
    /// </summary>
    public IReadOnlyList<Qube> NotRunning { get; init; } = [];

    /// <summary>False on the live backend while qubes of <see cref="NotRunning"/> are halted: their files cannot be read, so there are no steps.</summary>
    public bool IsComplete { get; init; } = true;

    /// <summary>How many forwards each qube's script carries after the change (qubes whose file or rules change).</summary>
    public IReadOnlyDictionary<string, int> ForwardCounts { get; init; } = new Dictionary<string, int>();

    /// <summary>
    /// Delivered through the agent (every qube on the way records it): the steps are only feature calls in dom0 (the
    /// declaration and the derived <c>vm-config.qubesfw.*</c> keys); nothing is written into or run in a qube.
    /// </summary>
    public bool ViaAgent { get; init; }

    /// <summary>Via the agent: for each qube whose keys change, the generation its agent must report (<c>none</c> for an emptied set).</summary>
    public IReadOnlyDictionary<string, string> AgentGenerations { get; init; } = new Dictionary<string, string>();

    /// <summary>Via the agent: how long to wait for the agents' confirmation (zero: not asked).</summary>
    public TimeSpan AgentWait { get; init; }

    /// <summary>
    /// A change of several forwards (a pipeline of Add-QubePortForward): each one's plan without steps (its operation, chain and
    /// warnings), in the order given; the steps, generations and counts are the change's. Empty for a change of one forward.
    /// </summary>
    public IReadOnlyList<PortForwardPlan> Members { get; init; } = [];

    /// <summary>The forward the change is about (<c>tcp/443 -> work:443</c>), or <c>10 port forwards</c>.</summary>
    public string Subject => Members.Count > 1 ? $"{Members.Count.ToString(CultureInfo.InvariantCulture)} port forwards" : Forward?.Text ?? FeatureName;

    /// <summary>The target of a change of several forwards: their count, and the first three.</summary>
    public static string Several(IReadOnlyList<PortForwardPlan> members) =>
        $"{members.Count.ToString(CultureInfo.InvariantCulture)} port forwards ({string.Join(", ", members.Take(3).Select(m => m.Forward?.Text ?? m.FeatureName))}" +
        (members.Count > 3 ? $" and {(members.Count - 3).ToString(CultureInfo.InvariantCulture)} more)" : ")");

    string IDeploymentPlan.Purpose => Members.Count > 1 ? $"{Operation.ToString().ToLowerInvariant()} {Target}" : $"{Operation.ToString().ToLowerInvariant()} port forward {Target}";

    /// <summary>True when the port is open to anyone who reaches the first hop (no -AllowFrom).</summary>
    public bool OpenToEveryone => Forward?.IsOpenToEveryone == true && Operation != PlanOperation.Remove;

    /// <summary>The whole plan for -WhatIf: one line per step, the nft commands indented under run steps.</summary>
    public string Describe()
    {
        var sb = new StringBuilder();
        if (Members.Count > 1)
        {
            sb.Append(Operation).Append(' ').Append(Members.Count.ToString(CultureInfo.InvariantCulture)).Append(" port forwards, as one change:");
            foreach (var m in Members) sb.AppendLine().Append("    ").Append(m.Operation).Append(" port forward ").Append(m.Target);
        }
        else sb.Append(Operation).Append(" port forward ").Append(Target).Append(':');
        if (!IsComplete) sb.Append(" first start ").Append(string.Join(", ", NotRunning.Select(q => q.Name))).Append(" (-Start); the steps are planned once they run");
        DeploymentStep.AppendList(sb, Steps);
        return sb.ToString();
    }
}

/// <summary>What happened in one qube when a plan was applied.</summary>
public enum PortForwardHopStatus
{
    /// <summary>File written as needed and the script ran in the qube.</summary>
    Applied,
    /// <summary>Offline root: the file was written and the run recorded (nothing runs offline).</summary>
    Recorded,
    /// <summary>The qube is not running: its file was written; the rules apply when it starts.</summary>
    Persisted,
    /// <summary>Its file and rules were found up to date; nothing written.</summary>
    Unchanged,
    /// <summary>A step of this qube failed; what it had changed was put back. See Message.</summary>
    Failed,
    /// <summary>Not reached: an earlier step failed.</summary>
    NotReached,
    /// <summary>Changed, then put back (its previous file, its previous rules loaded again) because a later qube failed.</summary>
    RolledBack,
    /// <summary>Putting it back failed: this qube needs attention (see Message).</summary>
    RollbackFailed,
    /// <summary>Via the agent: the qube is halted; its agent applies the new keys when it starts.</summary>
    Pending,
    /// <summary>Via the agent: no confirmation of the new generation in time.</summary>
    Unconfirmed,
    /// <summary>Via the agent: the features are set; the agent was not asked (-NoWait).</summary>
    Sent,
}

/// <summary>The result for one qube of a port forward change (Add-/Remove-QubePortForward -PassThru).</summary>
public sealed record PortForwardHopResult
{
    /// <summary>The qube whose rules changed.</summary>
    public required string VMName { get; init; }

    /// <summary><c>hop 1 of 2</c>, <c>target</c>.</summary>
    public required string Role { get; init; }

    /// <summary>The forward: <c>tcp/443 -> work:443</c>.</summary>
    public required string Forward { get; init; }

    public required PlanOperation Operation { get; init; }

    /// <summary>The qube whose /rw holds the file (the disposable template for a disposable).</summary>
    public required string StoredIn { get; init; }

    public required string Path { get; init; }

    public bool FileChanged { get; init; }

    /// <summary>Whether the script ran (false offline and for halted qubes).</summary>
    public bool Executed { get; init; }

    public int? ExitCode { get; init; }

    public string? Output { get; init; }

    /// <summary>How many forwards the qube's script now carries.</summary>
    public int Forwards { get; init; }

    public PortForwardHopStatus Status { get; init; }

    /// <summary>What happened there, in words (why it failed, that it was put back).</summary>
    public string? Message { get; init; }

    public override string ToString() => $"{VMName} ({Role}): {Status}";
}

/// <summary>
/// What applying a plan that crosses qubes did (port forwards and inter-qube links): the result per qube (hop), the whole
/// rollout, and the failure that stopped it (null when all went through).
/// </summary>
public sealed record HopResults(IReadOnlyList<PortForwardHopResult> Hops, QubesFirewallException? Failure)
{
    /// <summary>The plan deployed (offline: made again under the root's lock).</summary>
    public PortForwardPlan? Plan { get; init; }

    public DeploymentResult? Rollout { get; init; }
}

/// <summary>The script Export-QubeFirewallScript returns for a qube.</summary>
public sealed record QubeForwardScript(string VMName, string StoredIn, string Path, string Script, int Forwards);

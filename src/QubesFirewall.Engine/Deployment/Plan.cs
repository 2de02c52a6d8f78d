using System.Text;
using QubesFirewall.Engine.Backends;
using QubesFirewall.Engine.Model;

namespace QubesFirewall.Engine.Deployment;

/// <summary>What a plan does, as a word: the first word of its description and of its progress.</summary>
public enum PlanOperation
{
    Add,
    Update,
    Remove,
    Set,
    Enable,
    Disable,
    Repair,
    Sync,
    /// <summary>Everything asked for is already declared: the plan deploys what is missing of it, if anything.</summary>
    Reapply,
    /// <summary>A configuration file made true.</summary>
    Apply,
    Install,
    Uninstall,
}

/// <summary>
/// What every plan has: its ordered changes (deployed by <see cref="Rollout"/>), the qubes that must run first, what it is
/// about, its warnings and its description. The cmdlets handle halted qubes, ShouldProcess, -WhatIf, progress and errors
/// through these members alone, the same way for every plan.
/// </summary>
public interface IDeploymentPlan
{
    PlanOperation Operation { get; }

    IReadOnlyList<DeploymentStep> Steps { get; }

    /// <summary>Qubes the change has to reach that are not running, in network order (outermost first).</summary>
    IReadOnlyList<Qube> NotRunning { get; }

    /// <summary>False when the plan could not be made because qubes in <see cref="NotRunning"/> must run first (live backend).</summary>
    bool IsComplete { get; }

    /// <summary>Words for the refusal and the progress bar: "add tcp/443 -> work".</summary>
    string Purpose { get; }

    /// <summary>The ShouldProcess target: a qube, a forward, a binding.</summary>
    string Target { get; }

    IReadOnlyList<string> Warnings { get; }

    /// <summary>The whole plan for ShouldProcess and -WhatIf: one line saying what it does, then one numbered line per change, details indented.</summary>
    string Describe();

    /// <summary>The question -Confirm asks.</summary>
    string Question => $"{char.ToUpperInvariant(Purpose[0])}{Purpose[1..]}?";
}

/// <summary>
/// A plan of typed changes (rule lists, features, properties, starts, files, scripts) made by a pure planner, with its
/// operation, target, warnings and description. Firewall edits, ipv6 changes and netvm repairs are plans of this type;
/// port forwards, links, bindings and configuration files have their own records (what they carry for their results)
/// with the same members (<see cref="IDeploymentPlan"/>).
/// </summary>
public sealed record Plan : IDeploymentPlan
{
    public required PlanOperation Operation { get; init; }

    public required string Target { get; init; }

    /// <summary>The first line of <see cref="Describe"/>: "work: add 2 firewall rules".</summary>
    public required string Description { get; init; }

    public IReadOnlyList<DeploymentStep> Steps { get; init; } = [];

    public IReadOnlyList<string> Warnings { get; init; } = [];

    public IReadOnlyList<Qube> NotRunning { get; init; } = [];

    public bool IsComplete { get; init; } = true;

    /// <summary>"set the firewall rules of work".</summary>
    public required string Purpose { get; init; }

    /// <summary>The question -Confirm asks (default: the purpose).</summary>
    public string? Question { get; init; }

    string IDeploymentPlan.Question => Question ?? $"{char.ToUpperInvariant(Purpose[0])}{Purpose[1..]}?";

    /// <summary>The command that undoes the plan, for the failure message.</summary>
    public string UndoCommand { get; init; } = "the command with the previous values";

    public string Describe()
    {
        var sb = new StringBuilder(Description);
        DeploymentStep.AppendList(sb, Steps);
        return sb.ToString();
    }

    /// <summary>Deploys the plan (under the backend's deployment lock, made again by <paramref name="replan"/> first when it has one).</summary>
    public PlanResult Apply(IQubesBackend backend, RolloutOptions? options = null, Func<Plan>? replan = null)
    {
        // Under the backend's deployment lock only when the plan is made again under it: a plan whose steps deploy
        // plans of their own (an ipv6 change) takes the lock in each of those.
        var (plan, result) = replan is null ? (this, Rollout.Run(backend, Steps, options)) : Rollout.Deploy(backend, this, options, replan);
        return new PlanResult(plan, result, plan.Failure(result));
    }

    /// <summary>The error of a failed deployment: what stopped it and what was put back; null when it succeeded.</summary>
    public QubesFirewallException? Failure(DeploymentResult result)
    {
        if (result.Succeeded) return null;
        var what = $"{char.ToUpperInvariant(Purpose[0])}{Purpose[1..]}";
        var failed = result.Failed!;
        var changedBefore = result.Steps.Any(s => s.Status is DeploymentStepStatus.RolledBack or DeploymentStepStatus.RollbackFailed && !ReferenceEquals(s, failed));
        if (failed.Error is { } error && !changedBefore && failed.Status == DeploymentStepStatus.Failed) return error;
        var next = result.FullyRolledBack ? "Fix the cause and run the command again." : $"Put those places right and run the command again, or {UndoCommand} to undo.";
        return new QubesFirewallException(failed.Error?.ErrorId ?? ErrorIds.PlanFailed, result.FullyRolledBack ? failed.Error?.Kind ?? FailureKind.InvalidOperation : FailureKind.WriteError,
            result.Explain(what, next)!, failed.Error?.Target ?? Target);
    }
}

/// <summary>What deploying a <see cref="Plan"/> did: the plan deployed (made again under the lock), each step's result, and the failure (null: none).</summary>
public sealed record PlanResult(Plan Plan, DeploymentResult Result, QubesFirewallException? Failure);

using System.Text;
using QubesFirewall.Engine.Backends;
using QubesFirewall.Engine.Model;

namespace QubesFirewall.Engine.Deployment;

public enum DeploymentStepStatus
{
    /// <summary>Not reached: an earlier step failed.</summary>
    NotReached,
    /// <summary>Found already done (the file had the new content); nothing written.</summary>
    Unchanged,
    /// <summary>Done (for a run: the script ran and succeeded).</summary>
    Applied,
    /// <summary>Offline root (or -WhatIf): the run was recorded, nothing ran.</summary>
    Recorded,
    /// <summary>This step failed; what it had changed was put back.</summary>
    Failed,
    /// <summary>Done, then put back as it was because a later step failed.</summary>
    RolledBack,
    /// <summary>Putting it back failed too: this place needs attention.</summary>
    RollbackFailed,
}

/// <summary>What happened at one step.</summary>
public sealed record DeploymentStepResult(DeploymentStep Step, DeploymentStepStatus Status, string Message, QubeCommandResult? Command = null)
{
    /// <summary>For a file written in a qube: the mode the file had before (null: none, or unknown); a rollback gives it back.</summary>
    public UnixFileMode? PreviousMode { get; init; }

    /// <summary>For a failed step: the engine's error (its id is the one the cmdlet reports when nothing else was changed).</summary>
    public QubesFirewallException? Error { get; init; }

    /// <summary>For a rule-list edit: the list it left (the rules already present and not added again included).</summary>
    public FirewallEditOutcome? FirewallOutcome { get; init; }

    /// <summary>For a firewall reload: the entries the network qube got.</summary>
    public IReadOnlyList<Formats.QubesDbEntry>? Entries { get; init; }

    /// <summary>For a redeploy: what that deployment did, which a rollback puts back.</summary>
    public DeploymentResult? Nested { get; init; }

    public override string ToString() => $"{Step.Hop}: {Step.Subject}: {Status}";
}

/// <summary>Before each step (and each undo): which qube, the how-manieth of how many.</summary>
public sealed record DeploymentProgress(string Hop, int HopNumber, int HopCount, DeploymentStep Step, bool RollingBack);

public sealed record RolloutOptions
{
    /// <summary>Read each file just before writing it and stop if it is no longer what the plan read (default).</summary>
    public bool VerifyFiles { get; init; } = true;

    /// <summary>
    /// Read the features and the properties of a qube again just before the first write to them, and stop if they are no
    /// longer what the plan read (default). Off for -WhatIf, which writes nothing.
    /// </summary>
    public bool VerifyWrites { get; init; } = true;

    public Action<DeploymentProgress>? Progress { get; init; }
}

/// <summary>What a rollout did, step by step, in plan order; <see cref="Failed"/> is the step that stopped it.</summary>
public sealed record DeploymentResult(IReadOnlyList<DeploymentStepResult> Steps)
{
    /// <summary>
    /// The step that stopped the rollout: the one that failed, whether or not putting it back worked (then its
    /// status is RollbackFailed: the last reached step, all after it NotReached). Null when every step was reached
    /// and none failed.
    /// </summary>
    public DeploymentStepResult? Failed =>
        Steps.FirstOrDefault(s => s.Status == DeploymentStepStatus.Failed) ?? Steps.LastOrDefault(s => s.Status == DeploymentStepStatus.RollbackFailed);

    /// <summary>True only when no step is Failed, RollbackFailed or NotReached.</summary>
    public bool Succeeded => Failed is null && Steps.All(s => s.Status is not (DeploymentStepStatus.Failed or DeploymentStepStatus.RollbackFailed or DeploymentStepStatus.NotReached));

    /// <summary>
    /// The qubes a failed rollout left Failed, RollbackFailed or NotReached, each with the worst of these (in that
    /// order: RollbackFailed, Failed, NotReached), in plan order.
    /// </summary>
    public IReadOnlyList<(string Qube, DeploymentStepStatus Status)> LeftQubes =>
        Steps.GroupBy(s => s.Step.Hop, StringComparer.Ordinal)
            .Select(g => (Qube: g.Key, Status: Worst(g.Select(s => s.Status))))
            .Where(x => x.Status is DeploymentStepStatus.Failed or DeploymentStepStatus.RollbackFailed or DeploymentStepStatus.NotReached)
            .ToList();

    private static DeploymentStepStatus Worst(IEnumerable<DeploymentStepStatus> statuses)
    {
        var list = statuses.ToList();
        foreach (var s in new[] { DeploymentStepStatus.RollbackFailed, DeploymentStepStatus.Failed, DeploymentStepStatus.NotReached })
            if (list.Contains(s)) return s;
        return list.Count > 0 ? list[^1] : DeploymentStepStatus.Unchanged;
    }

    /// <summary>True when a failure was followed by a complete rollback: nothing is left changed.</summary>
    public bool FullyRolledBack => !Succeeded && Steps.All(s => s.Status != DeploymentStepStatus.RollbackFailed);

    /// <summary>The statuses of one qube's steps, in order.</summary>
    public IEnumerable<DeploymentStepResult> For(string hop) => Steps.Where(s => s.Step.Hop == hop);

    /// <summary>
    /// The failure as one message: where it stopped and why, what was put back, what could not be, and
    /// <paramref name="whatNext"/>. Null when it succeeded.
    /// </summary>
    public string? Explain(string what, string whatNext)
    {
        if (Failed is not { } failed) return null;
        var sb = new StringBuilder();
        sb.Append(what).Append(" failed at \"").Append(failed.Step.Description).Append("\": ").Append(failed.Message.TrimEnd());
        var back = Steps.Where(s => s.Status == DeploymentStepStatus.RolledBack).Select(s => s.Step.Subject).Distinct().ToList();
        var stuck = Steps.Where(s => s.Status == DeploymentStepStatus.RollbackFailed).ToList();
        if (back.Count > 0) sb.Append(" Rolled back: ").Append(string.Join("; ", back)).Append('.');
        if (stuck.Count > 0)
            sb.Append(" Could NOT be put back (check these by hand): ")
              .Append(string.Join("; ", stuck.Select(s => ReferenceEquals(s, failed) ? $"{s.Step.Subject} (see above)" : $"{s.Step.Subject}: {s.Message}"))).Append('.');
        else
            sb.Append(back.Count > 0 ? " Nothing is left changed." : " Nothing had been changed before it.");
        if (LeftQubes is { Count: > 0 } left)
            sb.Append(" Qubes left: ").Append(string.Join(", ", left.Select(l => $"{l.Qube} ({l.Status})"))).Append('.');
        sb.Append(' ').Append(whatNext);
        return sb.ToString();
    }

    /// <summary>
    /// The error of a failed rollout (null when it succeeded): <paramref name="rolledBackId"/> when everything was put
    /// back, <paramref name="partiallyAppliedId"/> when something could not be (both from <see cref="ErrorIds"/>);
    /// the message from <see cref="Explain"/>.
    /// </summary>
    public QubesFirewallException? Failure(string rolledBackId, string partiallyAppliedId, string what, string undoCommand, bool removing, object? target)
    {
        if (Succeeded) return null;
        var next = FullyRolledBack ? "Fix the cause and run the command again."
            : removing ? $"Put those places right and run {undoCommand} again."
            : $"Put those places right and run the command again, or {undoCommand} to undo.";
        // Someone else's change met on the way says so whatever the plan (once everything is put back): run it again.
        if (FullyRolledBack && Failed?.Error?.ErrorId == ErrorIds.PlanOutdated) rolledBackId = ErrorIds.PlanOutdated;
        return new QubesFirewallException(FullyRolledBack ? rolledBackId : partiallyAppliedId,
            FullyRolledBack ? FailureKind.InvalidOperation : FailureKind.WriteError, Explain(what, next)!, target);
    }
}

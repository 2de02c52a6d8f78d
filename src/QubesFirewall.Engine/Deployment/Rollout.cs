using System.Globalization;
using System.Text;
using QubesFirewall.Engine.Backends;
using QubesFirewall.Engine.Model;
using QubesFirewall.Engine.Persistence;

namespace QubesFirewall.Engine.Deployment;

public enum DeploymentStepKind
{
    /// <summary>Set a qube feature (the declaration of a forward or binding).</summary>
    SetFeature,
    RemoveFeature,
    /// <summary>Replace a file of a qube's /rw (a hook file with the managed block).</summary>
    WriteFile,
    /// <summary>Run a generated script as root in a qube now (from standard input, never written anywhere).</summary>
    RunScript,
    /// <summary>Replace one of dom0's own files (the module's qrexec policy file).</summary>
    WriteDom0File,
    RemoveDom0File,
    /// <summary>Add or remove rules of a qube's own Qubes firewall (an inter-qube link's accept for its destination).</summary>
    EditFirewall,
    /// <summary>Set a qube property (null value: reset it to its default), such as netvm; a rollback restores the previous value.</summary>
    SetProperty,
    /// <summary>Start a halted qube (a network qube its clients are attached to). A rollback leaves it running: nothing of its configuration changed.</summary>
    StartQube,
    /// <summary>
    /// A qube was re-attached to its network qube by the property steps before it: the backend completes the re-attach
    /// (offline: the firewall entries written into the network qube's QubesDB and the re-attach logged; live: qubesd did it on the set).
    /// </summary>
    NetworkReattached,
    /// <summary>
    /// Write a qube's current rules into its network qube's QubesDB, as qubesd does on a reload (live: <c>admin.vm.firewall.Reload</c>).
    /// A rollback has nothing to put back: the rules written are the qube's own.
    /// </summary>
    ReloadFirewall,
    /// <summary>
    /// Plan something again on the system as the steps before left it, and deploy that (the links and forwards an ipv6 change
    /// lays out again); a rollback puts back every change of that deployment, last first.
    /// </summary>
    Redeploy,
}

/// <summary>
/// One change of a plan, with what puts it back: the previous feature value, the previous file content
/// (null: there was none) or the script that loads the previous rules again. Port forwards and ConnectTCP
/// bindings are planned as lists of these and deployed by the one <see cref="Rollout"/>.
/// </summary>
public sealed record DeploymentStep
{
    public required DeploymentStepKind Kind { get; init; }

    /// <summary>Where the change is made: the qube (for a file of a disposable: its template), or dom0.</summary>
    public required string VMName { get; init; }

    /// <summary>The qube the change is about (the hop or target; a disposable, not its template). Default: <see cref="VMName"/>.</summary>
    public string? ForQube { get; init; }

    /// <summary>The qube results and progress are reported for.</summary>
    public string Hop => ForQube ?? VMName;

    /// <summary>The words -WhatIf and -Verbose show.</summary>
    public required string Description { get; init; }

    /// <summary>More lines for -WhatIf (the nft commands a run executes, the policy lines).</summary>
    public string? Detail { get; init; }

    /// <summary>For file and run steps: the qube whose /rw holds the hook file.</summary>
    public string? StoredIn { get; init; }

    public string? FeatureName { get; init; }
    public string? FeatureValue { get; init; }

    /// <summary>The feature's value before the change (null: it was not set); a rollback restores it.</summary>
    public string? PreviousFeatureValue { get; init; }

    public string? Path { get; init; }
    public string? Content { get; init; }

    /// <summary>The file as the plan read it (null: it did not exist); checked again just before writing, and written back by a rollback.</summary>
    public string? PreviousContent { get; init; }

    public UnixFileMode Mode { get; init; } = ManagedBlock.FileMode;

    public string? Script { get; init; }

    /// <summary>The script that loads the rules the qube had before (null: they do not differ); a rollback runs it.</summary>
    public string? PreviousScript { get; init; }

    /// <summary>Names the script in errors and logs: <c>port forwards of sys-net</c>.</summary>
    public string? ScriptName { get; init; }

    /// <summary>For <see cref="DeploymentStepKind.EditFirewall"/>: the planned rule-list change; a rollback applies its inverse.</summary>
    public Planning.FirewallChange? Firewall { get; init; }

    /// <summary>For <see cref="DeploymentStepKind.SetProperty"/>: the property, its new value (null: reset to default) and its value before (null: it was at its default).</summary>
    public string? PropertyName { get; init; }
    public string? PropertyValue { get; init; }
    public string? PreviousPropertyValue { get; init; }

    /// <summary>For <see cref="DeploymentStepKind.NetworkReattached"/>: the network qube and the commands that re-attached it.</summary>
    public string? NetVM { get; init; }

    /// <summary>For <see cref="DeploymentStepKind.Redeploy"/>: plans and deploys now; returns what the deployment did and its failure (null: none).</summary>
    public Func<IQubesBackend, (DeploymentResult? Result, QubesFirewallException? Failure)>? Redeploy { get; init; }

    /// <summary>Short words for rollback reports: <c>/rw/config/rc.local of work</c>.</summary>
    public string Subject => Kind switch
    {
        DeploymentStepKind.SetFeature or DeploymentStepKind.RemoveFeature => $"feature {FeatureName} of {VMName}",
        DeploymentStepKind.WriteFile => $"{Path} of {VMName}",
        DeploymentStepKind.RunScript => $"the rules running in {VMName}",
        DeploymentStepKind.EditFirewall => $"the Qubes firewall of {VMName}",
        DeploymentStepKind.SetProperty => $"property {PropertyName} of {VMName}",
        DeploymentStepKind.StartQube => $"the power state of {VMName}",
        DeploymentStepKind.NetworkReattached => $"the attachment of {VMName} to {NetVM}",
        DeploymentStepKind.ReloadFirewall => $"the firewall entries of {VMName} in its network qube",
        DeploymentStepKind.Redeploy => Description,
        _ => $"dom0's {Path}",
    };

    public override string ToString() => Description;

    /// <summary>Sets a declaration feature (<paramref name="previous"/>: its value now, null when not set; a rollback restores it). Null when it already has the value.</summary>
    public static DeploymentStep? SetFeature(string vmName, string name, string value, string? previous) => previous == value ? null : new DeploymentStep
    {
        Kind = DeploymentStepKind.SetFeature,
        VMName = vmName,
        FeatureName = name,
        FeatureValue = value,
        PreviousFeatureValue = previous,
        Description = $"{vmName}: {(previous is null ? "set" : "change")} feature {name} = '{value}'",
    };

    /// <summary>Removes a declaration feature whose value is <paramref name="previous"/> (a rollback sets it again).</summary>
    public static DeploymentStep RemoveFeature(string vmName, string name, string previous) => new()
    {
        Kind = DeploymentStepKind.RemoveFeature,
        VMName = vmName,
        FeatureName = name,
        PreviousFeatureValue = previous,
        Description = $"{vmName}: remove feature {name} (was '{previous}')",
    };

    /// <summary>Sets a qube property (<paramref name="value"/> null: resets it to its default); <paramref name="previous"/> is its value now (null: at its default), which a rollback restores.</summary>
    public static DeploymentStep SetProperty(string vmName, string name, string? value, string? previous, string description) => new()
    {
        Kind = DeploymentStepKind.SetProperty,
        VMName = vmName,
        PropertyName = name,
        PropertyValue = value,
        PreviousPropertyValue = previous,
        Description = description,
    };

    /// <summary>Starts a halted qube.</summary>
    public static DeploymentStep StartQube(string vmName, string description) => new()
    {
        Kind = DeploymentStepKind.StartQube,
        VMName = vmName,
        Description = description,
    };

    /// <summary>
    /// Changes a qube's rule list as <paramref name="change"/> plans it (qubesd, or the offline root, refuses when the list
    /// changed since it was read); the rules added and removed are the detail lines.
    /// </summary>
    public static DeploymentStep EditFirewall(Planning.FirewallChange change, string description) => new()
    {
        Kind = DeploymentStepKind.EditFirewall,
        VMName = change.VMName,
        Firewall = change,
        Description = description,
        Detail = change.Steps.Count == 0 ? null : string.Join("\n", change.Steps.Select(s => $"{s.Action}: {s.Target}")),
    };

    /// <summary>
    /// The step that gives a hook file the managed block <paramref name="body"/> makes from the current block
    /// (a blank body removes the block), or null when the file already is so. The file is kept in
    /// <paramref name="storage"/> for <paramref name="forQube"/> (a disposable's is in its template); <paramref name="role"/>
    /// ends the description ("1 forward"). A damaged block is refused, naming the file.
    /// </summary>
    public static DeploymentStep? HookFile(string storage, string forQube, string path, string? current, Func<string?, string> body, string replaceWords, string role)
    {
        string? content;
        try
        {
            var block = body(ManagedBlock.Extract(current));
            content = block.Trim().Length == 0 ? ManagedBlock.Remove(current) : ManagedBlock.Upsert(current, block);
        }
        catch (QubesFirewallException ex) when (ex.ErrorId == ErrorIds.ManagedBlockDamaged)
        {
            throw new QubesFirewallException(ex.ErrorId, ex.Kind, $"{storage}:{path}: {ex.Message}", $"{storage}:{path}");
        }
        if (content is null || content == current) return null;
        var what = ManagedBlock.Extract(content) is null ? "remove the managed block" : current is null ? "create it (#!/bin/sh, mode 0755) with the managed block"
            : ManagedBlock.Extract(current) is null ? "add the managed block (mode 0755)" : replaceWords;
        return new DeploymentStep
        {
            Kind = DeploymentStepKind.WriteFile,
            VMName = storage,
            ForQube = forQube,
            StoredIn = storage,
            Path = path,
            Content = content,
            PreviousContent = current,
            Mode = ManagedBlock.FileMode,
            Description = storage == forQube
                ? $"{forQube}: write {path}: {what} ({role})"
                : $"{storage}: write {path} for {forQube} (a disposable of {storage}): {what} ({role})",
        };
    }

    /// <summary>The numbered step list of a plan for -WhatIf, details indented.</summary>
    public static void AppendList(StringBuilder sb, IReadOnlyList<DeploymentStep> steps, string tab = "  ")
    {
        var n = 0;
        foreach (var step in steps)
        {
            sb.Append('\n').Append("  ").Append((++n).ToString(CultureInfo.InvariantCulture)).Append(". ").Append(step.Description);
            if (step.Detail is { } detail)
                foreach (var line in detail.TrimEnd('\n').Split('\n')) sb.Append("\n       ").Append(line.Replace("\t", tab, StringComparison.Ordinal));
        }
    }
}

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
        return new QubesFirewallException(FullyRolledBack ? rolledBackId : partiallyAppliedId,
            FullyRolledBack ? FailureKind.InvalidOperation : FailureKind.WriteError, Explain(what, next)!, target);
    }
}

/// <summary>
/// Deploys a plan's steps in order and keeps the qubes consistent: the first step that fails stops the
/// rollout, and everything already changed is put back, last first (features to their previous value,
/// files to their previous content, the previous rules loaded again by running the previous script:
/// scripts are idempotent transactions). A file is read again just before it is written; if it is not
/// what the plan read (someone else changed it meanwhile), that step fails and nothing is lost.
/// </summary>
public static class Rollout
{
    /// <summary>
    /// Deploys a plan: under the backend's deployment lock (offline root, live dom0) the plan is first made again by
    /// <paramref name="replan"/>, so nothing another process deployed since the first plan is lost; a plan
    /// that still needs halted qubes is refused by name. Returns the plan deployed and what happened.
    /// </summary>
    public static (TPlan Plan, DeploymentResult Result) Deploy<TPlan>(IQubesBackend backend, TPlan plan, RolloutOptions? options, Func<TPlan>? replan)
        where TPlan : IDeploymentPlan
    {
        using var gate = backend.LockDeployments();
        if (gate is not null && replan is not null) plan = replan();
        if (!plan.IsComplete) throw QubeStarter.Refusal(plan.NotRunning, plan.Purpose);
        return (plan, Run(backend, plan.Steps, options));
    }

    public static DeploymentResult Run(IQubesBackend backend, IReadOnlyList<DeploymentStep> steps, RolloutOptions? options = null)
    {
        options ??= new RolloutOptions();
        var hops = steps.Select(s => s.Hop).Distinct(StringComparer.Ordinal).ToList();
        void Report(DeploymentStep step, bool back) =>
            options.Progress?.Invoke(new DeploymentProgress(step.Hop, hops.IndexOf(step.Hop) + 1, hops.Count, step, back));

        var results = steps.Select(s => new DeploymentStepResult(s, DeploymentStepStatus.NotReached, "Not reached: an earlier step failed.")).ToArray();
        for (var i = 0; i < steps.Count; i++)
        {
            Report(steps[i], back: false);
            var (result, touched) = ApplyOne(backend, steps[i], options);
            results[i] = result;
            if (result.Status != DeploymentStepStatus.Failed) continue;

            // Put back what this step may have changed, then the steps before it, last first.
            if (touched)
            {
                Report(steps[i], back: true);
                if (Undo(backend, results[i]) is { } why)
                    results[i] = result with { Status = DeploymentStepStatus.RollbackFailed, Message = result.Message.TrimEnd() + $" Putting it back failed too: {why}" };
            }
            for (var j = i - 1; j >= 0; j--)
            {
                if (results[j].Status is not (DeploymentStepStatus.Applied or DeploymentStepStatus.Recorded)) continue;
                Report(steps[j], back: true);
                results[j] = Undo(backend, results[j]) is { } why
                    ? results[j] with { Status = DeploymentStepStatus.RollbackFailed, Message = $"Could not be put back after '{steps[i].Hop}' failed: {why}" }
                    : results[j] with { Status = DeploymentStepStatus.RolledBack, Message = $"Put back as it was because '{steps[i].Hop}' failed." };
            }
            break;
        }
        return new DeploymentResult(results);
    }

    private static (DeploymentStepResult Result, bool Touched) ApplyOne(IQubesBackend backend, DeploymentStep step, RolloutOptions options)
    {
        DeploymentStepResult Done(DeploymentStepStatus status, string message, QubeCommandResult? run = null) => new(step, status, message, run);
        try
        {
            switch (step.Kind)
            {
                case DeploymentStepKind.SetFeature:
                    backend.SetFeature(step.VMName, step.FeatureName!, step.FeatureValue!);
                    return (Done(DeploymentStepStatus.Applied, $"Set {step.Subject}."), true);
                case DeploymentStepKind.RemoveFeature:
                    backend.RemoveFeature(step.VMName, step.FeatureName!);
                    return (Done(DeploymentStepStatus.Applied, $"Removed {step.Subject}."), true);
                case DeploymentStepKind.WriteFile:
                case DeploymentStepKind.WriteDom0File:
                case DeploymentStepKind.RemoveDom0File:
                {
                    var inQube = step.Kind == DeploymentStepKind.WriteFile;
                    var wanted = step.Kind == DeploymentStepKind.RemoveDom0File ? null : step.Content;
                    // The mode the file has now, so a rollback gives it back (a 0644 rc.local must not come back 0755).
                    var previousMode = inQube && step.PreviousContent is not null ? backend.ReadQubeFileMode(step.VMName, step.Path!) : null;
                    if (options.VerifyFiles)
                    {
                        var current = inQube ? backend.ReadQubeFile(step.VMName, step.Path!) : backend.ReadDom0File(step.Path!);
                        if (current == wanted) return (Done(DeploymentStepStatus.Unchanged, "Already up to date."), false);
                        if (current != step.PreviousContent)
                            return (Done(DeploymentStepStatus.Failed,
                                $"{step.Subject} changed since it was read for this plan ({Size(step.PreviousContent)} then, {Size(current)} now: someone else changed it meanwhile); it was left as it is. Run the command again."), false);
                    }
                    if (inQube) backend.WriteQubeFile(step.VMName, step.Path!, step.Content!, step.Mode);
                    else if (wanted is null) backend.DeleteDom0File(step.Path!);
                    else backend.WriteDom0File(step.Path!, wanted, step.Mode);
                    return (Done(DeploymentStepStatus.Applied, wanted is null ? $"Removed {step.Subject}." : $"Wrote {step.Subject}.") with { PreviousMode = previousMode }, true);
                }
                case DeploymentStepKind.RunScript:
                {
                    var run = backend.RunQubeShellScript(step.VMName, step.Script!, step.ScriptName ?? $"script of {step.VMName}");
                    if (!run.Executed) return (Done(DeploymentStepStatus.Recorded, run.Output.Trim(), run), true);
                    return run.Succeeded
                        ? (Done(DeploymentStepStatus.Applied, "Ran as root.", run), true)
                        : (Done(DeploymentStepStatus.Failed, $"The script ({step.ScriptName ?? "generated"}) failed in '{step.VMName}' (exit code {run.ExitCode.ToString(CultureInfo.InvariantCulture)}): {RuleGrammar.Printable(run.Output.Trim())}", run), true);
                }
                case DeploymentStepKind.EditFirewall:
                    // qubesd (or the offline root) refuses the edit when the list changed since the plan read it.
                    if (step.Firewall!.Edit.IsEmpty) return (Done(DeploymentStepStatus.Unchanged, "Already up to date.") with { FirewallOutcome = step.Firewall.Preview }, false);
                    var outcome = Planning.FirewallPlanner.Apply(backend, step.Firewall);
                    return (Done(DeploymentStepStatus.Applied, $"Changed {step.Subject}.") with { FirewallOutcome = outcome }, true);
                case DeploymentStepKind.SetProperty:
                    if (step.PropertyValue is null) backend.ResetProperty(step.VMName, step.PropertyName!);
                    else backend.SetProperty(step.VMName, step.PropertyName!, step.PropertyValue);
                    return (Done(DeploymentStepStatus.Applied, $"Set {step.Subject}."), true);
                case DeploymentStepKind.StartQube:
                    backend.StartQube(step.VMName);
                    return (Done(DeploymentStepStatus.Applied, $"Started {step.VMName}."), true);
                case DeploymentStepKind.NetworkReattached:
                    backend.NetworkReattached(step.VMName, step.NetVM!, step.Detail ?? "");
                    return (Done(DeploymentStepStatus.Applied, $"Re-attached {step.VMName} to {step.NetVM}."), false);
                case DeploymentStepKind.ReloadFirewall:
                    return (Done(DeploymentStepStatus.Applied, $"Wrote {step.Subject}.") with { Entries = backend.SyncFirewall(step.VMName) }, false);
                case DeploymentStepKind.Redeploy:
                {
                    var (nested, failure) = step.Redeploy!(backend);
                    // A failed deployment has put back its own changes already.
                    if (failure is not null) return (Done(DeploymentStepStatus.Failed, failure.Message) with { Error = failure, Nested = nested }, false);
                    return (Done(DeploymentStepStatus.Applied, "Planned again and deployed.") with { Nested = nested }, true);
                }
                default:
                    throw new InvalidOperationException(step.Kind.ToString());
            }
        }
        catch (Exception ex) when (ex is QubesFirewallException or IOException or UnauthorizedAccessException)
        {
            // Writes are atomic (temporary file, rename) and a run that could not start ran nothing: nothing to put back.
            return (Done(DeploymentStepStatus.Failed, ex.Message) with { Error = ex as QubesFirewallException }, false);
        }
    }

    /// <summary>Puts one step back; null on success, else why not.</summary>
    private static string? Undo(IQubesBackend backend, DeploymentStepResult done)
    {
        var step = done.Step;
        try
        {
            switch (step.Kind)
            {
                case DeploymentStepKind.SetFeature:
                    if (step.PreviousFeatureValue is null) backend.RemoveFeature(step.VMName, step.FeatureName!);
                    else backend.SetFeature(step.VMName, step.FeatureName!, step.PreviousFeatureValue);
                    break;
                case DeploymentStepKind.RemoveFeature:
                    if (step.PreviousFeatureValue is not null) backend.SetFeature(step.VMName, step.FeatureName!, step.PreviousFeatureValue);
                    break;
                case DeploymentStepKind.WriteFile:
                    // A file the plan created is deleted again: an empty executable hook would not run.
                    if (step.PreviousContent is null) backend.DeleteQubeFile(step.VMName, step.Path!);
                    else backend.WriteQubeFile(step.VMName, step.Path!, step.PreviousContent, done.PreviousMode ?? step.Mode);
                    break;
                case DeploymentStepKind.WriteDom0File:
                case DeploymentStepKind.RemoveDom0File:
                    if (step.PreviousContent is null) backend.DeleteDom0File(step.Path!);
                    else backend.WriteDom0File(step.Path!, step.PreviousContent, step.Mode);
                    break;
                case DeploymentStepKind.EditFirewall:
                    var inverse = Planning.FirewallPlanner.Inverse(step.Firewall!);
                    if (!inverse.IsEmpty) backend.ApplyFirewallEdit(step.VMName, inverse, backend.GetFirewall(step.VMName));
                    break;
                case DeploymentStepKind.SetProperty:
                    if (step.PreviousPropertyValue == step.PropertyValue) break; // set to the value it had: nothing to put back
                    if (step.PreviousPropertyValue is null) backend.ResetProperty(step.VMName, step.PropertyName!);
                    else backend.SetProperty(step.VMName, step.PropertyName!, step.PreviousPropertyValue);
                    break;
                case DeploymentStepKind.StartQube:
                case DeploymentStepKind.NetworkReattached:
                case DeploymentStepKind.ReloadFirewall:
                    break; // a started qube stays running; a re-attach changed no setting
                case DeploymentStepKind.Redeploy:
                    foreach (var inner in (done.Nested?.Steps ?? []).Reverse())
                        if (inner.Status is DeploymentStepStatus.Applied or DeploymentStepStatus.Recorded && Undo(backend, inner) is { } whyNot)
                            return $"{inner.Step.Subject}: {whyNot}";
                    break;
                case DeploymentStepKind.RunScript:
                    if (step.PreviousScript is null) break;
                    var run = backend.RunQubeShellScript(step.VMName, step.PreviousScript, $"rollback: previous {step.ScriptName ?? "script"}");
                    if (!run.Succeeded)
                        return $"the previous script ({step.ScriptName ?? "generated"}) exited with code {run.ExitCode.ToString(CultureInfo.InvariantCulture)} in '{step.VMName}': {RuleGrammar.Printable(run.Output.Trim())}";
                    break;
            }
            return null;
        }
        catch (Exception ex) when (ex is QubesFirewallException or IOException or UnauthorizedAccessException)
        {
            return ex.Message;
        }
    }

    private static string Size(string? content) => content is null ? "no file" : $"{content.Length.ToString(CultureInfo.InvariantCulture)} characters";
}

/// <summary>
/// Qubes a change must reach: on the live backend a qube's files are read and written inside it and its
/// rules loaded there, so it must run. Refused by name unless the user asked to start them (-Start); then
/// started in the order given: the network chain's order, outermost network qube first (qubesd starts a
/// qube's netvm first anyway), so each qube finds its upstream running.
/// </summary>
public static class QubeStarter
{
    /// <summary>The qubes of <paramref name="needed"/> (in that order, once each) that are not running.</summary>
    public static IReadOnlyList<Qube> NotRunning(QubesInventory inventory, IEnumerable<string> needed) =>
        needed.Distinct(StringComparer.Ordinal).Select(inventory.Get).Where(q => q.State != PowerState.Running).ToList();

    /// <summary>The error for qubes that must run: names each with its state; says how to proceed.</summary>
    public static QubesFirewallException Refusal(IReadOnlyList<Qube> notRunning, string what)
    {
        var list = string.Join(", ", notRunning.Select(q => $"{q.Name} ({q.State.ToString().ToLowerInvariant()})"));
        var hint = notRunning.All(q => q.State == PowerState.Halted)
            ? "Start them first (qvm-start), or add -Start to have them started in network order (outermost network qube first)."
            : "Only halted qubes can be started; resume or unpause the others first.";
        return new QubesFirewallException(ErrorIds.QubesNotRunning, FailureKind.ResourceUnavailable,
            $"These qubes must be running to {what} (their files are read and written inside them, their rules loaded now): {list}. {hint} Nothing was changed.",
            notRunning.Select(q => q.Name).ToList());
    }

    /// <summary>Starts the halted qubes in the order given; refuses (before starting any) when one is paused or in another state.</summary>
    public static IReadOnlyList<string> Start(IQubesBackend backend, IReadOnlyList<Qube> notRunning, string what)
    {
        if (notRunning.Any(q => q.State != PowerState.Halted)) throw Refusal(notRunning, what);
        var started = new List<string>();
        foreach (var qube in notRunning)
        {
            backend.StartQube(qube.Name);
            started.Add(qube.Name);
        }
        return started;
    }
}

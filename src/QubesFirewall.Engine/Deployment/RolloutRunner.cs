using QubesFirewall.Engine.Backends;
using QubesFirewall.Engine.Model;

namespace QubesFirewall.Engine.Deployment;

/// <summary>
/// One hop of a rollout: replace a file in a qube's persistent storage (e.g. the managed block in
/// <c>/rw/config/qubes-firewall-user-script</c>), then optionally run a script there so the change takes
/// effect now. <see cref="PreviousContent"/> is the file as the planner read it (null: it did not exist);
/// it is what a rollback puts back.
/// </summary>
public sealed record RolloutStep(string VMName, string Path, string NewContent, string? PreviousContent, UnixFileMode Mode, string? ApplyPath = null)
{
    /// <summary>Words for ShouldProcess / -WhatIf: the qube, the file, the size, and whether it runs.</summary>
    public string Describe() =>
        $"Write {Path} in {VMName} ({System.Text.Encoding.UTF8.GetByteCount(NewContent)} bytes{(PreviousContent is null ? ", new file" : "")})" +
        (ApplyPath is null ? "" : ApplyPath == Path ? " and run it" : $" and run {ApplyPath}");
}

public enum RolloutStepStatus
{
    /// <summary>Not reached: an earlier hop failed.</summary>
    NotAttempted,
    /// <summary>The file already had the new content; nothing written or run.</summary>
    Unchanged,
    /// <summary>Written (and run, if the step has an apply script).</summary>
    Applied,
    /// <summary>This hop failed; the message says how. Its previous content was put back when it had been written.</summary>
    Failed,
    /// <summary>Applied, then put back to its previous content (and run again) because a later hop failed.</summary>
    RolledBack,
    /// <summary>Putting the previous content back failed too: this hop needs attention.</summary>
    RollbackFailed,
}

/// <summary>What happened at one hop.</summary>
public sealed record RolloutStepResult(RolloutStep Step, RolloutStepStatus Status, string Message, QubeCommandResult? Command = null)
{
    public string VMName => Step.VMName;
    public string Path => Step.Path;
    public override string ToString() => $"{VMName}:{Path} {Status}: {Message}";
}

/// <summary>What a rollout did, hop by hop, in the order the steps were given.</summary>
public sealed record RolloutResult(IReadOnlyList<RolloutStepResult> Steps, IReadOnlyList<string> StartedQubes)
{
    public bool Succeeded => Steps.All(s => s.Status is RolloutStepStatus.Applied or RolloutStepStatus.Unchanged);
}

public sealed record RolloutOptions
{
    /// <summary>Start halted qubes (in the order they first appear in the steps: give hops upstream first) instead of refusing.</summary>
    public bool StartHalted { get; init; }

    /// <summary>
    /// Refuse before changing anything when a hop is not running (default). The live backend cannot
    /// reach a halted qube at all; offline the power-state files are checked the same way.
    /// </summary>
    public bool RequireRunning { get; init; } = true;

    /// <summary>Read each file just before writing it and stop if it is no longer <see cref="RolloutStep.PreviousContent"/> (default).</summary>
    public bool VerifyPrevious { get; init; } = true;

    /// <summary>Called after each hop, rollback included, as results become known.</summary>
    public Action<RolloutStepResult>? Progress { get; init; }
}

/// <summary>
/// Applies per-hop file changes in order and keeps the chain consistent: a hop that fails stops the
/// rollout, and the hops already changed are put back from their previous content (and their apply
/// script is run again, so the rules they had are loaded again: scripts must be idempotent). Halted
/// hops are refused up front, naming them, unless <see cref="RolloutOptions.StartHalted"/>.
/// </summary>
public sealed class RolloutRunner(IQubesBackend backend, RolloutOptions? options = null)
{
    private readonly RolloutOptions _options = options ?? new RolloutOptions();

    /// <summary>
    /// Checks every hop's qube before anything changes: unknown qubes and (with RequireRunning) qubes
    /// not running are refused in one error; with StartHalted, halted ones are started in step order.
    /// Returns the names of the qubes it started.
    /// </summary>
    public IReadOnlyList<string> Prepare(IReadOnlyList<RolloutStep> steps)
    {
        var inventory = backend.GetInventory();
        var names = steps.Select(s => s.VMName).Distinct(StringComparer.Ordinal).ToList();
        var notRunning = new List<Qube>();
        foreach (var name in names)
        {
            var qube = inventory.Get(name);
            if (_options.RequireRunning && qube.State != PowerState.Running) notRunning.Add(qube);
        }
        if (notRunning.Count == 0) return [];
        var startable = notRunning.All(q => q.State is PowerState.Halted);
        if (!_options.StartHalted || !startable)
        {
            var list = string.Join(", ", notRunning.Select(q => $"{q.Name} ({q.State.ToString().ToLowerInvariant()})"));
            var hint = startable
                ? "Start them first (qvm-start), or ask for them to be started (-Start)."
                : "Only halted qubes can be started; resume or unpause the others first.";
            throw new QubesFirewallException("QubesNotRunning", FailureKind.ResourceUnavailable,
                $"These qubes must be running to change them: {list}. {hint} Nothing was changed.", notRunning.Select(q => q.Name).ToList());
        }
        var started = new List<string>();
        foreach (var qube in notRunning)
        {
            backend.StartQube(qube.Name);
            started.Add(qube.Name);
        }
        return started;
    }

    /// <summary>Runs <see cref="Prepare"/>, then each step in order; see the class summary.</summary>
    public RolloutResult Run(IReadOnlyList<RolloutStep> steps)
    {
        var started = Prepare(steps);
        var results = new RolloutStepResult?[steps.Count];
        var changed = new List<int>();
        for (var i = 0; i < steps.Count; i++)
        {
            var step = steps[i];
            var (result, written) = ApplyOne(step);
            if (result.Status is RolloutStepStatus.Applied or RolloutStepStatus.Unchanged)
            {
                results[i] = Report(result);
                if (result.Status == RolloutStepStatus.Applied) changed.Add(i);
                continue;
            }

            // This hop failed: put it back if it was written, then the ones before it, last first.
            if (written)
            {
                var restore = Restore(step);
                result = result with { Message = result.Message + (restore is null ? " Its previous content was put back." : $" Putting its previous content back failed too: {restore}") };
                if (restore is not null) result = result with { Status = RolloutStepStatus.RollbackFailed };
            }
            results[i] = Report(result);
            foreach (var j in Enumerable.Reverse(changed))
            {
                var failure = Restore(steps[j]);
                results[j] = Report(failure is null
                    ? results[j]! with { Status = RolloutStepStatus.RolledBack, Message = $"Put back to its previous content because {step.VMName} failed." }
                    : results[j]! with { Status = RolloutStepStatus.RollbackFailed, Message = $"Could not be put back after {step.VMName} failed: {failure}" });
            }
            for (var k = i + 1; k < steps.Count; k++)
                results[k] = Report(new RolloutStepResult(steps[k], RolloutStepStatus.NotAttempted, $"Not attempted: {step.VMName} failed before it."));
            break;
        }
        return new RolloutResult(results.Select(r => r!).ToList(), started);
    }

    private RolloutStepResult Report(RolloutStepResult result)
    {
        _options.Progress?.Invoke(result);
        return result;
    }

    private (RolloutStepResult Result, bool Written) ApplyOne(RolloutStep step)
    {
        try
        {
            if (_options.VerifyPrevious)
            {
                var current = backend.ReadQubeFile(step.VMName, step.Path);
                if (current == step.NewContent)
                    return (new RolloutStepResult(step, RolloutStepStatus.Unchanged, "Already up to date."), false);
                if (current != step.PreviousContent)
                    return (new RolloutStepResult(step, RolloutStepStatus.Failed,
                        $"{step.Path} in {step.VMName} changed since it was read for this plan ({Size(step.PreviousContent)} then, {Size(current)} now); nothing was written there. Plan again."), false);
            }
        }
        catch (QubesFirewallException ex)
        {
            return (new RolloutStepResult(step, RolloutStepStatus.Failed, ex.Message), false);
        }

        try
        {
            backend.WriteQubeFile(step.VMName, step.Path, step.NewContent, step.Mode);
        }
        catch (QubesFirewallException ex)
        {
            // The write is atomic inside the qube (temporary file, rename): a failed one leaves the old file.
            return (new RolloutStepResult(step, RolloutStepStatus.Failed, ex.Message), false);
        }

        if (step.ApplyPath is null)
            return (new RolloutStepResult(step, RolloutStepStatus.Applied, $"Wrote {step.Path}."), true);
        try
        {
            var run = backend.RunQubeScript(step.VMName, step.ApplyPath);
            return run.Succeeded
                ? (new RolloutStepResult(step, RolloutStepStatus.Applied, run.Executed ? $"Wrote {step.Path} and ran {step.ApplyPath}." : $"Wrote {step.Path}; {run.Output}", run), true)
                : (new RolloutStepResult(step, RolloutStepStatus.Failed, $"{step.ApplyPath} failed in {step.VMName} with exit code {run.ExitCode}: {RuleGrammar.Printable(run.Output.Trim())}", run), true);
        }
        catch (QubesFirewallException ex)
        {
            return (new RolloutStepResult(step, RolloutStepStatus.Failed, ex.Message), true);
        }
    }

    /// <summary>Writes the previous content back (an empty file when there was none) and runs the apply script again; null on success, else why not.</summary>
    private string? Restore(RolloutStep step)
    {
        try
        {
            backend.WriteQubeFile(step.VMName, step.Path, step.PreviousContent ?? "", step.Mode);
            if (step.ApplyPath is not null)
            {
                var run = backend.RunQubeScript(step.VMName, step.ApplyPath);
                if (!run.Succeeded) return $"{step.ApplyPath} exited with code {run.ExitCode} after the previous content was written back: {RuleGrammar.Printable(run.Output.Trim())}";
            }
            return null;
        }
        catch (QubesFirewallException ex)
        {
            return ex.Message;
        }
    }

    private static string Size(string? content) => content is null ? "no file" : $"{content.Length} characters";
}

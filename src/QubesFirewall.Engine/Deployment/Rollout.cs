using System.Globalization;
using QubesFirewall.Engine.Backends;
using QubesFirewall.Engine.Model;

namespace QubesFirewall.Engine.Deployment;

/// <summary>
/// Deploys a plan's steps in order and keeps the qubes consistent: the first step that fails stops the
/// rollout, and everything already changed is put back, last first (features to their previous value,
/// files to their previous content, the previous rules loaded again by running the previous script:
/// scripts are idempotent transactions). What a step writes is read again just before: a file before each write,
/// a qube's features and properties before the first write to them (<see cref="WriteCheck"/>), a rule list by the
/// backend before its Set; if it is not what the plan read (someone else changed it meanwhile), that step fails with
/// PlanOutdated (rules: FirewallChangedSinceRead), nothing of it is written and everything before it is put back.
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
        var check = options.VerifyWrites ? new WriteCheck(backend, steps) : null;
        for (var i = 0; i < steps.Count; i++)
        {
            Report(steps[i], back: false);
            var (result, touched) = ApplyOne(backend, steps[i], options, check);
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

    private static (DeploymentStepResult Result, bool Touched) ApplyOne(IQubesBackend backend, DeploymentStep step, RolloutOptions options, WriteCheck? check)
    {
        DeploymentStepResult Done(DeploymentStepStatus status, string message, QubeCommandResult? run = null) => new(step, status, message, run);
        try
        {
            check?.Before(step); // features and properties read again before the first write to their qube
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
                        {
                            var outdated = WriteCheck.FileChanged(step, current);
                            return (Done(DeploymentStepStatus.Failed, outdated.Message) with { Error = outdated }, false);
                        }
                    }
                    if (wanted is null)
                    {
                        if (inQube) backend.DeleteQubeFile(step.VMName, step.Path!);
                        else backend.DeleteDom0File(step.Path!);
                    }
                    else if (inQube) backend.WriteQubeFile(step.VMName, step.Path!, wanted, step.Mode);
                    else backend.WriteDom0File(step.Path!, wanted, step.Mode);
                    return (Done(DeploymentStepStatus.Applied, wanted is null ? $"Removed {step.Subject}." : $"Wrote {step.Subject}.") with { PreviousMode = previousMode }, true);
                }
                case DeploymentStepKind.RunScript:
                {
                    var run = backend.RunQubeShellScript(step.VMName, step.Script!, step.ScriptName ?? $"script of {step.VMName}");
                    if (!run.Executed) return (Done(DeploymentStepStatus.Recorded, run.Output.Trim(), run), true);
                    if (run.Succeeded) return (Done(DeploymentStepStatus.Applied, "Ran as root.", run), true);
                    var failed = $"The script ({step.ScriptName ?? "generated"}) failed in '{step.VMName}' (exit code {run.ExitCode.ToString(CultureInfo.InvariantCulture)}): {RuleGrammar.Printable(run.Output.Trim())}";
                    return (Done(DeploymentStepStatus.Failed, failed, run) with
                    {
                        Error = step.FailureId is { } id ? new QubesFirewallException(id, FailureKind.WriteError, failed, step.Hop) : null,
                    }, true);
                }
                case DeploymentStepKind.EditFirewall:
                    // qubesd (or the offline root) refuses the edit when the list changed since the plan read it.
                    if (step.Firewall!.Edit.IsEmpty) return (Done(DeploymentStepStatus.Unchanged, "Already up to date.") with { FirewallOutcome = step.Firewall.Preview }, false);
                    var outcome = step.Firewall.Apply(backend);
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
                    var inverse = step.Firewall!.Inverse();
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
}

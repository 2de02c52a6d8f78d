using System.Management.Automation;
using QubesFirewall.Engine;
using QubesFirewall.Engine.Backends;
using QubesFirewall.Engine.Deployment;
using QubesFirewall.Engine.Planning;

namespace QubesFirewall.PowerShell;

/// <summary>
/// What every QubesFirewall cmdlet shares: the -Root parameter, the backend it selects, and the
/// one place engine failures become ErrorRecords.
/// </summary>
public abstract class QubeCmdlet : PSCmdlet
{
    private IQubesBackend? _backend;

    /// <summary>An offline Qubes root; wins over $env:QUBESFW_ROOT and the live backend.</summary>
    [Parameter]
    [ValidateNotNullOrEmpty]
    public string? Root { get; set; }

    /// <summary>The backend, opened on first use; nothing can continue without it.</summary>
    protected IQubesBackend Backend
    {
        get
        {
            if (_backend is not null) return _backend;
            try
            {
                var root = Root is null ? null : SessionState.Path.GetUnresolvedProviderPathFromPSPath(Root);
                _backend = BackendSelector.Open(root, name =>
                    name == BackendSelector.RootVariable && Environment.GetEnvironmentVariable(name) is { Length: > 0 } r
                        ? SessionState.Path.GetUnresolvedProviderPathFromPSPath(r)
                        : Environment.GetEnvironmentVariable(name));
                WriteVerbose($"Using {_backend.Description}.");
                return _backend;
            }
            catch (QubesFirewallException ex)
            {
                ThrowTerminatingError(ToErrorRecord(ex));
                throw; // not reached
            }
        }
    }

    protected DateTimeOffset Now { get; } = DateTimeOffset.UtcNow;

    protected override void EndProcessing()
    {
        // Live: say how many Admin API calls this invocation made (the cost -Verbose users can check).
        if (_backend?.CallCount is { } calls)
            WriteVerbose($"{calls} Admin API call(s) to {_backend.Description}.");
        DisposeBackend();
    }

    protected override void StopProcessing() => DisposeBackend();

    private void DisposeBackend()
    {
        _backend?.Dispose();
        _backend = null;
    }

    /// <summary>
    /// Walks <paramref name="items"/> reporting progress (Write-Progress) when there is more than one:
    /// operations over many qubes or hops say where they are.
    /// </summary>
    protected IEnumerable<T> WithProgress<T>(IReadOnlyCollection<T> items, string activity, Func<T, string> describe)
    {
        var id = ProgressId(activity);
        var index = 0;
        foreach (var item in items)
        {
            if (items.Count > 1)
                WriteProgress(new ProgressRecord(id, activity, $"{describe(item)} ({index + 1} of {items.Count})") { PercentComplete = index * 100 / items.Count });
            index++;
            yield return item;
        }
        if (items.Count > 1) WriteProgress(new ProgressRecord(id, activity, "Done") { RecordType = ProgressRecordType.Completed });
    }

    /// <summary>
    /// Rollout options whose progress becomes Write-Progress over the qubes a port forward or binding reaches
    /// ("sys-firewall (2 of 3)", the step as current operation; "rolling back" while changes are put back).
    /// </summary>
    protected RolloutOptions HopProgress(string activity) => new()
    {
        Progress = p => WriteProgress(new ProgressRecord(ProgressId(activity), activity,
            $"{(p.RollingBack ? "Rolling back " : "")}{p.Hop} ({p.HopNumber} of {p.HopCount})")
        {
            CurrentOperation = p.Step.Description,
            PercentComplete = (p.HopNumber - 1) * 100 / p.HopCount,
        }),
    };

    /// <summary>Ends the progress bar <see cref="HopProgress"/> started.</summary>
    protected void CompleteProgress(string activity) =>
        WriteProgress(new ProgressRecord(ProgressId(activity), activity, "Done") { RecordType = ProgressRecordType.Completed });

    private static int ProgressId(string activity) => Math.Abs(activity.GetHashCode() % 10000) + 1;

    /// <summary>
    /// Qubes a plan must reach that are not running. Without -Start: the live backend refuses them, naming
    /// each (the offline root goes on: it writes their files as dom0 could, nothing runs there). With -Start:
    /// they are started in network order, outermost network qube first (one ShouldProcess), and the plan is
    /// made again now that they run. Returns the plan to go on with, or null when the command stops.
    /// </summary>
    protected T? StartWhatMustRun<T>(T plan, bool start, Func<T> replan) where T : class, IDeploymentPlan
    {
        if (plan.NotRunning.Count == 0) return plan;
        var names = string.Join(", ", plan.NotRunning.Select(q => q.Name));
        if (!start)
        {
            if (plan.IsComplete) return plan;
            WriteError(ToErrorRecord(QubeStarter.Refusal(plan.NotRunning, plan.Purpose)));
            return null;
        }
        if (!ShouldProcess($"{names} (in this order)", "Start halted qubes"))
        {
            if (plan.IsComplete) return plan;
            WriteWarning($"The rest of the plan can be made only once {names} run{(plan.NotRunning.Count == 1 ? "s" : "")}: their files are read inside them.");
            return null;
        }
        if (!TryEngine(() => QubeStarter.Start(Backend, plan.NotRunning, plan.Purpose), out var started)) return null;
        WriteVerbose($"Started {string.Join(", ", started)}.");
        return TryEngine(replan, out var again) ? again : null;
    }

    /// <summary>
    /// Deploys a port forward plan (Add- and Remove-QubePortForward) through <see cref="Deploy{TPlan,TResult}"/>: progress over
    /// its qubes, offline made again under the root's lock first; -PassThru writes one result per qube; a failure (after the
    /// rollback) becomes one error that says what was put back.
    /// </summary>
    protected void DeployPortForward(PortForwardPlan plan, bool start, Func<PortForwardPlan> replan, bool passThru,
        Func<PortForwardPlan, bool>? confirmMore = null, Func<PortForwardPlan, string>? describe = null)
    {
        if (Deploy(plan, start, replan, (p, options, again) => PortForwardPlanner.Apply(Backend, p, options, again), r => r.Failure, confirmMore, describe,
                p => p.Members.Count > 1 ? $"{p.Operation} {p.Subject}" : $"{p.Operation} port forward {p.Subject}") is not { } result) return;
        if (passThru) WriteObject(result.Hops, enumerateCollection: true);
        if (result.Failure is null) WriteVerbose($"{result.Plan!.Operation}: {result.Plan.Target}: done ({result.Hops.Count} qubes).");
    }

    /// <summary>
    /// The one way a mutating cmdlet deploys a plan: halted qubes named (refused) or started (-Start, the plan made
    /// again), the plan's warnings, one ShouldProcess whose text is the whole plan (a plan without changes is said in
    /// -Verbose and asks nothing), under -WhatIf the calls and file contents the live backend would send, then
    /// <paramref name="apply"/> (given the plan, the rollout's options and <paramref name="replan"/>, null under -WhatIf)
    /// with progress over the plan's qubes, and its failure as one error. Returns what
    /// <paramref name="apply"/> returned, or default (null) when nothing was deployed. <paramref name="confirmMore"/>
    /// asks what the plan needs beyond ShouldProcess (a qube taken off a Whonix gateway, a port opened to everyone);
    /// <paramref name="describe"/> adds to the plan's text, <paramref name="activityOf"/> names the progress bar (default: the purpose).
    /// </summary>
    protected TResult? Deploy<TPlan, TResult>(TPlan plan, bool start, Func<TPlan>? replan, Func<TPlan, RolloutOptions, Func<TPlan>?, TResult> apply, Func<TResult, QubesFirewallException?> failureOf,
        Func<TPlan, bool>? confirmMore = null, Func<TPlan, string>? describe = null, Func<TPlan, string>? activityOf = null)
        where TPlan : class, IDeploymentPlan
    {
        if (StartWhatMustRun(plan, start, replan ?? (() => plan)) is not { } ready) return default;
        foreach (var warning in ready.Warnings) WriteWarning(warning);
        string Description() => describe?.Invoke(ready) ?? ready.Describe();
        if (ready.IsComplete && ready.Steps.Count == 0)
        {
            WriteVerbose(Description());
            if (WhatIfRequested) return default;
        }
        else if (!ShouldProcess(ShouldProcessShowsDescription ? Description() : ready.Purpose, ready.Question, MyInvocation.MyCommand.Name))
        {
            // the plan shown, not made again; nothing is written, so nothing is read again before writing
            ShowWhatIfDetails(() => apply(ready, new RolloutOptions { VerifyWrites = false }, null));
            return default;
        }
        if (confirmMore is not null && !confirmMore(ready)) return default;
        // Progress over the plan's qubes when it reaches more than one.
        var activity = activityOf?.Invoke(ready) ?? $"{char.ToUpperInvariant(ready.Purpose[0])}{ready.Purpose[1..]}";
        var several = ready.Steps.Select(s => s.Hop).Distinct(StringComparer.Ordinal).Skip(1).Any();
        if (!TryEngine(() => apply(ready, several ? HopProgress(activity) : new RolloutOptions(), replan), out var result)) return default;
        if (several) CompleteProgress(activity);
        if (failureOf(result) is { } failure) WriteError(ToErrorRecord(failure));
        return result;
    }

    /// <summary><see cref="Deploy{TPlan,TResult}"/> for a <see cref="Plan"/>.</summary>
    protected PlanResult? Deploy(Plan plan, bool start = false, Func<Plan>? replan = null, Func<Plan, bool>? confirmMore = null) =>
        Deploy(plan, start, replan, (p, options, again) => p.Apply(Backend, options, again), r => r.Failure, confirmMore);

    /// <summary>
    /// True when ShouldProcess shows its description: under -WhatIf (given, or through $WhatIfPreference), and with the -Verbose
    /// switch (given, or through $PSDefaultParameterValues: it is then bound too), which makes ShouldProcess write it as a verbose
    /// line when it asks nothing. Nothing else shows it: not $VerbosePreference, not -Debug, and -Confirm's question is
    /// <see cref="IDeploymentPlan.Question"/>. Otherwise the plan's text is not made: a 10,000-rule Add's is a 10,000-line
    /// string nobody reads (and, with the buffer it was built in, two large-object-heap allocations that bring full
    /// collections of pwsh's heap).
    /// </summary>
    protected bool ShouldProcessShowsDescription => WhatIfRequested || MyInvocation.BoundParameters.ContainsKey("Verbose");

    /// <summary>True when the command runs with -WhatIf (given, or through $WhatIfPreference).</summary>
    protected bool WhatIfRequested =>
        MyInvocation.BoundParameters.TryGetValue("WhatIf", out var given)
            ? LanguagePrimitives.IsTrue(given)
            : LanguagePrimitives.IsTrue(SessionState.PSVariable.GetValue("WhatIfPreference"));

    /// <summary>
    /// A second question for one dangerous case of a command whose ConfirmImpact is lower (a port opened to everyone),
    /// asked as ConfirmImpact High would be: not under -WhatIf (ShouldProcess said no before), not when -Confirm was
    /// given (ShouldProcess asked already) or -Confirm:$false, not when $ConfirmPreference is None; otherwise asked.
    /// </summary>
    protected bool ConfirmHighImpact(string query, string caption)
    {
        if (WhatIfRequested) return false;
        if (MyInvocation.BoundParameters.ContainsKey("Confirm")) return true; // -Confirm asked in ShouldProcess; -Confirm:$false said yes
        var preference = SessionState.PSVariable.GetValue("ConfirmPreference");
        if (preference is ConfirmImpact.None || (preference is string p && p.Equals("None", StringComparison.OrdinalIgnoreCase))) return true;
        return ShouldContinue(query, caption);
    }

    /// <summary>
    /// Under -WhatIf, runs <paramref name="apply"/> against the backend's dry run so the user also sees
    /// every call and every file content it would send (the live backend); the plan's own What-if lines
    /// are all an offline root has to show.
    /// </summary>
    protected void ShowWhatIfDetails(Action apply)
    {
        if (!WhatIfRequested) return;
        using var scope = Backend.BeginDryRun(line =>
            WriteInformation(new HostInformationMessage { Message = "What if: would send " + line }, ["PSHOST", "WhatIf"]));
        if (scope is null) return;
        TryEngine(apply);
    }

    /// <summary>Runs an engine call; a failure tied to this input becomes a non-terminating error.</summary>
    protected bool TryEngine(Action action)
    {
        try
        {
            action();
            return true;
        }
        catch (QubesFirewallException ex)
        {
            WriteError(ToErrorRecord(ex));
            return false;
        }
    }

    protected bool TryEngine<T>(Func<T> func, out T result)
    {
        try
        {
            result = func();
            return true;
        }
        catch (QubesFirewallException ex)
        {
            WriteError(ToErrorRecord(ex));
            result = default!;
            return false;
        }
    }

    /// <summary>
    /// A name pattern (wildcards allowed), checked now: an invalid one (an unclosed '[', a trailing '`')
    /// becomes an InvalidNamePattern error for this input and null, not a crash half-way through a listing;
    /// a name without wildcards must be a valid qube name.
    /// </summary>
    protected WildcardPattern? NamePattern(string pattern)
    {
        // A literal name must be one qubesd could hold; "work\0" would otherwise match "work".
        if (!WildcardPattern.ContainsWildcardCharacters(pattern) && !TryEngine(() => Engine.Validation.QubeName.Validate(pattern), out _)) return null;
        var wildcard = WildcardPattern.Get(pattern, WildcardOptions.IgnoreCase);
        try
        {
            wildcard.IsMatch(""); // parses the whole pattern
            return wildcard;
        }
        catch (WildcardPatternException ex)
        {
            WriteError(ToErrorRecord(QubesFirewallException.Invalid(ErrorIds.InvalidNamePattern,
                $"'{Engine.Model.RuleGrammar.Printable(pattern)}' is not a valid name pattern: {ex.Message} (use * and ? as wildcards, [a-z] for a range, ` to take a wildcard character literally).", pattern)));
            return null;
        }
    }

    /// <summary>
    /// A pattern naming qubes of <paramref name="inventory"/>: as <see cref="NamePattern"/>, and a name without
    /// wildcards must be a qube there (QubeNotFound otherwise, like Get-Qube), while a wildcard may match none.
    /// </summary>
    protected WildcardPattern? QubePattern(string pattern, Engine.Model.QubesInventory inventory)
    {
        if (NamePattern(pattern) is not { } wildcard) return null;
        if (WildcardPattern.ContainsWildcardCharacters(pattern) || inventory.Find(pattern) is not null) return wildcard;
        WriteError(ToErrorRecord(Engine.Model.QubesInventory.NotFound(pattern, Backend.Description)));
        return null;
    }

    public static ErrorRecord ToErrorRecord(QubesFirewallException ex) =>
        new(ex, ex.ErrorId, CategoryOf(ex.Kind), ex.Target)
        {
            ErrorDetails = new ErrorDetails(ex.Message),
        };

    public static ErrorCategory CategoryOf(FailureKind kind) => kind switch
    {
        FailureKind.InvalidArgument => ErrorCategory.InvalidArgument,
        FailureKind.InvalidData => ErrorCategory.InvalidData,
        FailureKind.ObjectNotFound => ErrorCategory.ObjectNotFound,
        FailureKind.ResourceExists => ErrorCategory.ResourceExists,
        FailureKind.ResourceUnavailable => ErrorCategory.ResourceUnavailable,
        FailureKind.InvalidOperation => ErrorCategory.InvalidOperation,
        FailureKind.PermissionDenied => ErrorCategory.PermissionDenied,
        FailureKind.NotImplemented => ErrorCategory.NotImplemented,
        FailureKind.ConnectionError => ErrorCategory.ConnectionError,
        FailureKind.WriteError => ErrorCategory.WriteError,
        FailureKind.ProtocolError => ErrorCategory.ProtocolError,
        _ => ErrorCategory.NotSpecified,
    };
}

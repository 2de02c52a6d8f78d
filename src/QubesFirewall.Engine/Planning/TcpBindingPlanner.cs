using System.Globalization;
using System.Text;
using QubesFirewall.Engine.Backends;
using QubesFirewall.Engine.Deployment;
using QubesFirewall.Engine.Formats;
using QubesFirewall.Engine.Model;
using QubesFirewall.Engine.Persistence;
using QubesFirewall.Engine.Scripts;

namespace QubesFirewall.Engine.Planning;

/// <summary>Read access to dom0's policy files for a plan (the backend's, or a test's).</summary>
public sealed record Dom0PolicyReader(Func<string, IReadOnlyList<string>> List, Func<string, string?> Read)
{
    public static Dom0PolicyReader For(IQubesBackend backend) => new(backend.ListDom0Files, backend.ReadDom0File);
}

/// <summary>
/// The ordered changes that add, update or remove one binding. Adding opens from the inside out: the
/// declaration, the client's listener, the dom0 policy last (the grant); removing closes from the outside in:
/// the policy first, then the listener, the declaration last. A failure half way therefore never leaves a
/// grant without its declaration, and running the command again finishes the job. Deterministic: the same
/// inventory, files and request give the same plan. Deployed by <see cref="Rollout"/>: a failure half way puts
/// every change back, feature included.
/// </summary>
public sealed record TcpBindingPlan : IDeploymentPlan
{
    /// <summary>Add, Update, Reapply (the same binding declared again) or Remove.</summary>
    public required PlanOperation Operation { get; init; }

    /// <summary>The binding added/updated, or the one removed (null when the removed feature cannot be read).</summary>
    public TcpBinding? Binding { get; init; }

    /// <summary>For an update: the declaration it replaces.</summary>
    public TcpBinding? Previous { get; init; }

    public required string From { get; init; }
    public required string To { get; init; }
    public required int Port { get; init; }
    public required string FeatureName { get; init; }

    public IReadOnlyList<DeploymentStep> Steps { get; init; } = [];

    /// <summary>The qube keeping the client's rc.local when it is not running (live: its file is read and written inside it).</summary>
    public IReadOnlyList<Qube> NotRunning { get; init; } = [];

    /// <summary>False on the live backend when a permanent binding's client part cannot be planned because that qube is not running.</summary>
    public bool IsComplete { get; init; } = true;

    string IDeploymentPlan.Purpose => $"{Operation.ToString().ToLowerInvariant()} the qubes.ConnectTCP binding {Target}";

    string IDeploymentPlan.Question => Operation == PlanOperation.Remove
        ? $"Remove qubes.ConnectTCP binding {Target}: its dom0 policy line{(Binding?.Permanent != false ? ", the listener in " + From : "")} and its feature?"
        : $"{Operation} qubes.ConnectTCP binding {Target}?";

    public IReadOnlyList<string> Warnings { get; init; } = [];

    /// <summary>Information for -Verbose (how to use a binding that is not permanent, ...).</summary>
    public IReadOnlyList<string> Notes { get; init; } = [];

    /// <summary>The ShouldProcess target: <c>untrusted -> mytcp-service:444</c>.</summary>
    public string Target => Binding?.Text ?? $"{From} -> {To}:{Port.ToString(CultureInfo.InvariantCulture)}";

    /// <summary>The whole plan for -WhatIf: one line per step, details indented.</summary>
    public string Describe()
    {
        var sb = new StringBuilder();
        sb.Append(Operation).Append(" qubes.ConnectTCP binding ").Append(Target).Append(':');
        if (!IsComplete) sb.Append(" first start ").Append(string.Join(", ", NotRunning.Select(q => q.Name))).Append(" (-Start); the steps are planned once it runs");
        else if (Steps.Count == 0) sb.Append(" nothing to change");
        DeploymentStep.AppendList(sb, Steps, tab: " ");
        return sb.ToString();
    }
}

/// <summary>What happened to one change of a binding (the feature, the client's rc.local, its listeners, dom0's policy).</summary>
public sealed record TcpBindingChangeResult
{
    /// <summary>Where the change was made: the client, the qube keeping its rc.local, or dom0.</summary>
    public required string VMName { get; init; }

    /// <summary>The binding: <c>untrusted -> work:444</c>.</summary>
    public required string Binding { get; init; }

    public required PlanOperation Operation { get; init; }

    /// <summary>What changes: <c>/rw/config/rc.local of work</c>, <c>dom0's /etc/qubes/policy.d/70-qubesfirewall.policy</c>.</summary>
    public required string Change { get; init; }

    public required DeploymentStepStatus Status { get; init; }

    public string? Message { get; init; }

    public override string ToString() => $"{VMName}: {Change}: {Status}";

    /// <summary>One line for -Verbose: the message alone when it says what was done, else the change, its status and the message.</summary>
    public string Describe() =>
        Status == DeploymentStepStatus.Applied && Message is { Length: > 0 } ? $"{VMName}: {Message}" : $"{VMName}: {Change}: {Status}. {Message}";
}

/// <summary>What applying a plan did, change by change; the run in the client (if any); the failure that stopped it.</summary>
public sealed record TcpBindingApplyResult(IReadOnlyList<TcpBindingChangeResult> Changes, QubeCommandResult? Run, QubesFirewallException? Failure)
{
    /// <summary>The plan deployed (offline: made again under the root's lock).</summary>
    public TcpBindingPlan? Plan { get; init; }

    /// <summary>How many changes were made (Applied or Recorded).</summary>
    public int Done => Changes.Count(c => c.Status is DeploymentStepStatus.Applied or DeploymentStepStatus.Recorded);
}

/// <summary>
/// Plans qubes.ConnectTCP bindings from the declarations in the client qubes' features (the only source of
/// truth): checks names, ports and conflicts, rebuilds the dom0 policy file from every declaration and the
/// client's rc.local section from its permanent ones, and says when a line of another policy file decides the
/// call first.
/// </summary>
public static class TcpBindingPlanner
{
    private const string Dom0 = "dom0";

    // ------------------------------------------------------------------ add

    public static TcpBindingPlan PlanAdd(IQubesBackend backend, TcpBinding binding, DeploymentOptions options) =>
        PlanAdd(backend.GetInventory(), binding, options, backend.ReadQubeFile, Dom0PolicyReader.For(backend));

    /// <summary>The pure planner: inventory, request, file reader (qube, path -> content or null), dom0 policy reader.</summary>
    public static TcpBindingPlan PlanAdd(QubesInventory inventory, TcpBinding binding, DeploymentOptions options,
        Func<string, string, string?> readFile, Dom0PolicyReader dom0)
    {
        var warnings = new List<string>();
        var notes = new List<string>();
        var client = inventory.Get(binding.From);
        var target = inventory.Get(binding.To);
        if (client.Class == QubeClass.AdminVM || target.Class == QubeClass.AdminVM)
            throw QubesFirewallException.Invalid(ErrorIds.Dom0NotAllowed, $"A qubes.ConnectTCP binding cannot involve dom0 ('{(client.Class == QubeClass.AdminVM ? client.Name : target.Name)}').", binding.Text);

        var declarations = TcpBindingDeclaration.ReadAll(inventory);
        var existing = declarations.FirstOrDefault(d => d.From == binding.From && d.FeatureName == binding.FeatureName);
        var others = new List<TcpBinding>();
        foreach (var d in declarations)
        {
            if (ReferenceEquals(d, existing)) continue;
            if (d.Binding is null) { warnings.Add(IgnoredWarning(d)); continue; }
            others.Add(d.Binding);
        }

        // @default leads to one target per client and port; a local port listens once per client
        if (others.FirstOrDefault(o => o.From == binding.From && o.Port == binding.Port) is { } sameCall)
            throw new QubesFirewallException(ErrorIds.TcpBindingConflict, FailureKind.ResourceExists,
                $"'{binding.From}' already has a qubes.ConnectTCP binding for port {binding.Port.ToString(CultureInfo.InvariantCulture)}, to '{sameCall.To}' " +
                $"(feature {sameCall.FeatureName}). Its calls name @default, which the policy can send to one target only. Remove that binding first " +
                $"(Remove-QubeTcpBinding -From {sameCall.From} -To {sameCall.To} -Port {sameCall.Port.ToString(CultureInfo.InvariantCulture)}). Nothing was changed.", binding.Text);
        if (binding.Permanent && others.FirstOrDefault(o => o.From == binding.From && o.Permanent && o.LocalPort == binding.LocalPort) is { } sameLocal)
            throw new QubesFirewallException(ErrorIds.LocalPortInUse, FailureKind.ResourceExists,
                $"Local port {binding.LocalPort.ToString(CultureInfo.InvariantCulture)} of '{binding.From}' already listens for {sameLocal.Text}. Choose another -LocalPort. Nothing was changed.", binding.Text);

        var previous = existing?.Binding;
        // the declaration carries the client's uuid, so a copy (qvm-clone, restore) is recognised and never deployed
        var value = DeclarationOwner.Bind(client.Uuid, binding.FeatureValue);
        var operation = existing is null ? PlanOperation.Add : existing.FeatureValue == value ? PlanOperation.Reapply : PlanOperation.Update;
        var after = others.Append(binding).ToList();

        var before = previous is null ? others : others.Append(previous).ToList();
        var touchesClient = binding.Permanent || previous?.Permanent == true || existing is { Binding: null };
        var notRunning = touchesClient ? QubeStarter.NotRunning(inventory, [HookFiles.StorageOf(inventory, client).Name]) : [];
        if (options.RequireRunning && binding.Permanent && notRunning.Count > 0)
            return new TcpBindingPlan
            {
                Operation = operation, Binding = binding, Previous = previous, From = binding.From, To = binding.To, Port = binding.Port,
                FeatureName = binding.FeatureName, NotRunning = notRunning, IsComplete = false, Warnings = warnings.Distinct().ToList(),
            };

        var steps = new List<DeploymentStep>();
        if (DeploymentStep.SetFeature(binding.From, binding.FeatureName, value, existing?.FeatureValue) is { } feature) steps.Add(feature);
        if (touchesClient)
            steps.AddRange(ClientSteps(inventory, client, after, before, readFile, options, warnings));
        if (binding.Permanent)
        {
            if (HookFiles.HasCustomPersist(inventory, client))
                warnings.Add($"'{client.Name}' has the R4.3 custom-persist service on: Qubes does not run /rw/config/rc.local there, so its listener starts now but not when it starts again. " +
                    "Make /rw/config persistent in it (a custom-persist.* bind) or turn custom-persist off.");
        }
        else
        {
            notes.Add($"Nothing listens in '{binding.From}' for this binding (not -Permanent): run '{binding.Command}' in it when needed " +
                $"(qvm-connect-tcp listens on all of its addresses while it runs), or add the binding again with -Permanent.");
        }
        var policy = PolicySteps(declarations, existing, after, dom0, warnings);
        steps.AddRange(policy.Steps);
        CheckPolicyDecision(inventory, binding, policy.Content, dom0, warnings);

        return new TcpBindingPlan
        {
            Operation = operation,
            Binding = binding,
            Previous = previous,
            From = binding.From,
            To = binding.To,
            Port = binding.Port,
            FeatureName = binding.FeatureName,
            Steps = steps,
            Warnings = warnings.Distinct().ToList(),
            Notes = notes,
            NotRunning = notRunning,
        };
    }

    // ------------------------------------------------------------------ remove

    public static TcpBindingPlan PlanRemove(IQubesBackend backend, string from, string to, int port, DeploymentOptions options) =>
        PlanRemove(backend.GetInventory(), from, to, port, options, backend.ReadQubeFile, Dom0PolicyReader.For(backend));

    /// <summary>
    /// Plans removing the binding of <paramref name="from"/> to port <paramref name="port"/> of <paramref name="to"/> (also a
    /// hand-written feature with leading zeros or an unreadable value): the policy without its line first, then the
    /// client's section without its listener, the feature last.
    /// </summary>
    public static TcpBindingPlan PlanRemove(QubesInventory inventory, string from, string to, int port, DeploymentOptions options,
        Func<string, string, string?> readFile, Dom0PolicyReader dom0)
    {
        var warnings = new List<string>();
        var client = inventory.Get(Validation.QubeName.Validate(from));
        Validation.QubeName.Validate(to);
        TcpBinding.ValidatePort(port, "Port");
        var name = TcpBindingFeature.NameFor(to, port);
        var matching = TcpBindingDeclaration.Read(client)
            .Where(d => TcpBindingFeature.TryParseName(d.FeatureName, out var t, out var p, lenient: true) && t == to && p == port).ToList();
        if (matching.Count == 0)
            throw new QubesFirewallException(ErrorIds.TcpBindingNotFound, FailureKind.ObjectNotFound,
                $"'{from}' has no qubes.ConnectTCP binding to port {port.ToString(CultureInfo.InvariantCulture)} of '{to}' (no feature {name}). Get-QubeTcpBinding lists the declared ones.", name);
        var removed = matching.Select(d => d.Binding).FirstOrDefault(b => b is not null);
        var declarations = TcpBindingDeclaration.ReadAll(inventory);
        var after = new List<TcpBinding>();
        foreach (var d in declarations)
        {
            if (d.From == client.Name && matching.Any(m => m.FeatureName == d.FeatureName)) continue;
            if (d.Binding is null) { warnings.Add(IgnoredWarning(d)); continue; }
            after.Add(d.Binding);
        }
        if (removed is null)
            warnings.Add($"The declaration {matching[0].FeatureName} of {from} cannot be read: its line is left out of the policy and its listener (if any) stopped, then the feature is removed.");

        var steps = new List<DeploymentStep>();
        steps.AddRange(PolicySteps(declarations, null, after, dom0, warnings).Steps);
        var touchesClient = removed is null || removed.Permanent;
        // Removing never waits for the client: the policy line is what grants the call (see ClientSteps).
        var notRunning = touchesClient ? QubeStarter.NotRunning(inventory, [HookFiles.StorageOf(inventory, client).Name]) : [];
        if (touchesClient)
            steps.AddRange(ClientSteps(inventory, client, after, removed is null ? after : after.Append(removed).ToList(), readFile, options, warnings));
        foreach (var d in matching) steps.Add(DeploymentStep.RemoveFeature(client.Name, d.FeatureName, d.FeatureValue));
        return new TcpBindingPlan
        {
            Operation = PlanOperation.Remove,
            Binding = removed,
            From = client.Name,
            To = to,
            Port = port,
            FeatureName = name,
            Steps = steps,
            Warnings = warnings.Distinct().ToList(),
            NotRunning = notRunning,
        };
    }

    // ------------------------------------------------------------------ list

    /// <summary>The declared bindings as Get-QubeTcpBinding shows them (invalid declarations come back with their problem).</summary>
    public static IReadOnlyList<QubeTcpBinding> List(QubesInventory inventory, Func<string, bool>? fromFilter = null) =>
        inventory.Qubes
            .Where(q => q.Class != QubeClass.AdminVM && (fromFilter is null || fromFilter(q.Name))) // features of the others are not read (live: no calls)
            .SelectMany(TcpBindingDeclaration.Read)
            .Select(d => new QubeTcpBinding(d))
            .ToList();

    // ------------------------------------------------------------------ apply

    /// <summary>
    /// Deploys the plan with <see cref="Rollout"/> (the same as port forwards): in order, the first failure
    /// stops it and every change made is put back, the feature included. Under the backend's deployment lock
    /// (offline root) the plan is first made again by <paramref name="replan"/>, so nothing another process
    /// changed since the first plan is lost.
    /// </summary>
    public static TcpBindingApplyResult Apply(IQubesBackend backend, TcpBindingPlan plan, RolloutOptions? options = null, Func<TcpBindingPlan>? replan = null)
    {
        (plan, var rollout) = Rollout.Deploy(backend, plan, options, replan);
        var changes = rollout.Steps.Select(r => new TcpBindingChangeResult
        {
            VMName = r.Step.VMName,
            Binding = plan.Target,
            Operation = plan.Operation,
            Change = r.Step.Subject,
            Status = r.Status,
            Message = r.Message,
        }).ToList();
        var run = rollout.Steps.FirstOrDefault(r => r.Step.Kind == DeploymentStepKind.RunScript)?.Command;
        var failure = rollout.Failure(ErrorIds.TcpBindingRolledBack, ErrorIds.TcpBindingPartiallyApplied, $"{plan.Operation} qubes.ConnectTCP binding {plan.Target}", "Remove-QubeTcpBinding", plan.Operation == PlanOperation.Remove, changes);
        return new TcpBindingApplyResult(changes, run, failure) { Plan = plan };
    }

    // ------------------------------------------------------------------ steps

    private static IEnumerable<DeploymentStep> ClientSteps(QubesInventory inventory, Qube client, IReadOnlyList<TcpBinding> after, IReadOnlyList<TcpBinding> before,
        Func<string, string, string?> readFile, DeploymentOptions options, List<string> warnings)
    {
        var byClient = after.Where(b => b.Permanent).GroupBy(b => b.From, StringComparer.Ordinal)
            .ToDictionary(g => g.Key, g => (IReadOnlyList<TcpBinding>)g.ToList(), StringComparer.Ordinal);
        IReadOnlyList<TcpBinding> PermanentOf(Qube q) => byClient.TryGetValue(q.Name, out var l) ? l : [];
        var mine = PermanentOf(client);
        var storage = HookFiles.StorageOf(inventory, client);
        var path = ConnectTcpPersistence.Path;
        if (storage.Name != client.Name)
            warnings.Add($"'{client.Name}' is a disposable of '{storage.Name}': its /rw is a fresh copy of {storage.Name}'s at each start, so its listeners are kept in {storage.Name}'s {path}, " +
                $"in a part that runs only in the qube named {client.Name}; {storage.Name} itself must be running to change it.");

        if (options.RequireRunning && storage.State != PowerState.Running)
        {
            // the live backend reads and writes a qube's /rw through qvm-run, which needs it running (a permanent
            // binding is not planned then, see PlanAdd); a listener that goes away can wait: the policy refuses its calls
            warnings.Add($"'{storage.Name}' is {storage.State.ToString().ToLowerInvariant()}, so its {path} is left as it is: its qubes.ConnectTCP part still starts the listener at boot, " +
                $"which is harmless once the policy refuses the call. The part is rebuilt from the declarations the next time a binding of {client.Name} changes while {storage.Name} runs.");
            yield break;
        }
        var write = DeploymentStep.HookFile(storage.Name, client.Name, path, readFile(storage.Name, path),
            block => ConnectTcpPersistence.ReplacePart(block, ConnectTcpPersistence.Part(inventory, storage, PermanentOf)),
            "replace the qubes.ConnectTCP part of the managed block (mode 0755)", Count(mine));
        if (write is not null) yield return write;
        if (options.RequireRunning && client.State != PowerState.Running)
        {
            warnings.Add($"'{client.Name}' is not running: nothing is started in it now; its listeners follow its rc.local when it starts.");
            yield break;
        }
        var detail = new StringBuilder();
        foreach (var b in mine.OrderBy(b => b.LocalPort))
            detail.Append(TcpBinding.SocketUnitName(b.LocalPort)).Append(": ListenStream=127.0.0.1:").Append(b.LocalPort.ToString(CultureInfo.InvariantCulture))
                  .Append(", Accept=true; ").Append(TcpBinding.ServiceUnitName(b.LocalPort)).Append(": ").Append(ConnectTcpUnits.QrexecClientVm).Append(" @default ").Append(b.Call).Append('\n');
        if (mine.Count == 0) detail.Append("(no binding left: stops and removes the module's qubesfirewall-tcp-* units, or its socat listeners)\n");
        var script = ConnectTcpUnits.Render(client.Name, mine);
        var previousScript = ConnectTcpUnits.Render(client.Name, before.Where(b => b.Permanent && b.From == client.Name).ToList());
        yield return new DeploymentStep
        {
            Kind = DeploymentStepKind.RunScript,
            VMName = client.Name,
            Script = script,
            PreviousScript = previousScript == script ? null : previousScript,
            ScriptName = $"qubes.ConnectTCP bindings of {client.Name}",
            Description = $"{client.Name}: run as root its listener script ({Count(mine)}; the script of its rc.local part): systemd socket units, or socat listeners where systemd does not run:",
            Detail = detail.ToString(),
        };
    }

    private static string Count(IReadOnlyList<TcpBinding> list) =>
        list.Count == 0 ? "no permanent binding left" : list.Count == 1 ? "1 permanent binding" : $"{list.Count.ToString(CultureInfo.InvariantCulture)} permanent bindings";

    private static (IReadOnlyList<DeploymentStep> Steps, string? Content) PolicySteps(IReadOnlyList<TcpBindingDeclaration> before, TcpBindingDeclaration? replaced,
        IReadOnlyList<TcpBinding> after, Dom0PolicyReader dom0, List<string> warnings)
    {
        var content = QrexecPolicy.Render(after);
        var current = dom0.Read(QrexecPolicy.FilePath);
        var expected = QrexecPolicy.Render(before.Where(d => d.Binding is not null).Select(d => d.Binding!));
        if (current is not null && current != expected && current != content)
            warnings.Add($"dom0's {QrexecPolicy.FilePath} is not what the declarations give (edited by hand, or written from other features): it is rewritten whole from the qubesfirewall.tcp.* features.");
        if (content == current) return ([], content);
        if (content is null)
            return ([new DeploymentStep
            {
                Kind = DeploymentStepKind.RemoveDom0File,
                VMName = Dom0,
                Path = QrexecPolicy.FilePath,
                PreviousContent = current,
                Mode = QrexecPolicy.FileMode,
                Description = $"dom0: remove {QrexecPolicy.FilePath} (no binding left)",
            }], null);
        var lines = content.Split('\n').Where(l => l.Length > 0 && !l.StartsWith('#')).ToList();
        return ([new DeploymentStep
        {
            Kind = DeploymentStepKind.WriteDom0File,
            VMName = Dom0,
            Path = QrexecPolicy.FilePath,
            Content = content,
            PreviousContent = current,
            Mode = QrexecPolicy.FileMode,
            Description = $"dom0: {(current is null ? "create" : "rewrite")} {QrexecPolicy.FilePath} ({lines.Count.ToString(CultureInfo.InvariantCulture)} line{(lines.Count == 1 ? "" : "s")}, written under a temporary name qrexec ignores, then renamed):",
            Detail = string.Join('\n', lines),
        }], content);
    }

    /// <summary>Warns when the call would not end where the binding says: a line of another file decides first, or qrexec refuses every call.</summary>
    private static void CheckPolicyDecision(QubesInventory inventory, TcpBinding binding, string? newPolicy, Dom0PolicyReader dom0, List<string> warnings)
    {
        QrexecPolicy.Decision decision;
        try
        {
            var files = new List<(string Name, string Content)>();
            foreach (var name in dom0.List(QrexecPolicy.Directory))
            {
                if (name == QrexecPolicy.FileName || !QrexecPolicy.IsConsidered(name)) continue;
                if (!QrexecPolicy.HasValidName(name)) { files.Add((name, "")); continue; }
                if (dom0.Read(QrexecPolicy.Directory + "/" + name) is { } text) files.Add((name, text));
            }
            if (newPolicy is not null) files.Add((QrexecPolicy.FileName, newPolicy));
            decision = QrexecPolicy.Evaluate(files, TcpBinding.Service, "+" + binding.Port.ToString(CultureInfo.InvariantCulture), inventory.Get(binding.From),
                legacy => dom0.Read(QrexecPolicy.LegacyDirectory + "/" + legacy));
        }
        catch (QubesFirewallException ex)
        {
            warnings.Add($"The other qrexec policy files could not be read to check that {binding.Text} is decided by {QrexecPolicy.FileName}: {ex.Message}");
            return;
        }
        if (decision.Problem is { } problem)
        {
            warnings.Add($"{binding.Text} will be refused: {problem}.");
            return;
        }
        var rule = decision.Rule;
        if (rule is not null && rule.File == QrexecPolicy.FileName) return;
        if (rule is { Action: "allow" } && decision.RedirectTarget == binding.To) return;
        var outcome = rule is null ? "nothing matches it, so qrexec refuses it"
            : rule.Action switch
            {
                "deny" => "it denies the call",
                "ask" => "it asks in dom0 at each connection",
                _ => decision.RedirectTarget is { } t ? $"it sends the call to '{t}'" : "it allows the call without naming the target (@default then fails)",
            };
        warnings.Add($"{binding.Text}: {binding.Call} from {binding.From} is decided before {QrexecPolicy.FileName}" +
            (rule is null ? $": {outcome}." : $" by {rule.Location} ('{rule.Text}'): {outcome}.") +
            (rule is null ? "" : " Change or remove that line (files are read in name order, the first matching line wins) for the binding to work."));
    }

    private static string IgnoredWarning(TcpBindingDeclaration d) =>
        $"The feature {d.FeatureName} of {d.From} is not a valid qubes.ConnectTCP binding and is ignored (nothing is generated for it): {d.Problem} Fix or remove it: Remove-QubeTcpBinding removes it by target and port.";
}

using System.Globalization;
using System.Text;
using QubesFirewall.Engine.Backends;
using QubesFirewall.Engine.Formats;
using QubesFirewall.Engine.Model;
using QubesFirewall.Engine.Persistence;
using QubesFirewall.Engine.Scripts;

namespace QubesFirewall.Engine.Planning;

/// <summary>How a qubes.ConnectTCP binding plan is made.</summary>
public sealed record TcpBindingOptions
{
    /// <summary>
    /// Live backend: a client's listeners are started now only when it runs, and its rc.local can be changed
    /// only while the qube that keeps it runs (qvm-run). Offline every run is recorded, nothing checked.
    /// </summary>
    public bool RequireRunning { get; init; }

    public static TcpBindingOptions For(IQubesBackend backend) => new() { RequireRunning = backend is not OfflineRoot };
}

/// <summary>Read access to dom0's policy files for a plan (the backend's, or a test's).</summary>
public sealed record Dom0PolicyReader(Func<string, IReadOnlyList<string>> List, Func<string, string?> Read)
{
    public static Dom0PolicyReader For(IQubesBackend backend) => new(backend.ListDom0Files, backend.ReadDom0File);
}

public enum TcpBindingStepKind { SetFeature, RemoveFeature, WriteFile, RunScript, WritePolicy, RemovePolicy }

/// <summary>One change of a binding plan, with the words -WhatIf and -Verbose show.</summary>
public sealed record TcpBindingStep
{
    public required TcpBindingStepKind Kind { get; init; }

    /// <summary>Where the change is made: the client (feature, run), the qube keeping its rc.local (file), dom0 (policy).</summary>
    public required string VMName { get; init; }

    public required string Description { get; init; }

    /// <summary>More lines for -WhatIf (the policy lines, the units a run installs).</summary>
    public string? Detail { get; init; }

    public string? FeatureName { get; init; }
    public string? FeatureValue { get; init; }
    public string? Path { get; init; }
    public string? Content { get; init; }
    public string? Script { get; init; }

    public override string ToString() => Description;
}

/// <summary>
/// The ordered changes that add, update or remove one binding. Adding opens from the inside out: the
/// declaration, the client's listener, the dom0 policy last (the grant); removing closes from the outside in:
/// the policy first, then the listener, the declaration last. A failure half way therefore never leaves a
/// grant without its declaration, and running the command again finishes the job. Deterministic: the same
/// inventory, files and request give the same plan.
/// </summary>
public sealed record TcpBindingPlan
{
    public required string Operation { get; init; }

    /// <summary>The binding added/updated, or the one removed (null when the removed feature cannot be read).</summary>
    public TcpBinding? Binding { get; init; }

    /// <summary>For an update: the declaration it replaces.</summary>
    public TcpBinding? Previous { get; init; }

    public required string From { get; init; }
    public required string To { get; init; }
    public required int Port { get; init; }
    public required string FeatureName { get; init; }

    public IReadOnlyList<TcpBindingStep> Steps { get; init; } = [];

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
        if (Steps.Count == 0) sb.Append(" nothing to change");
        var n = 0;
        foreach (var step in Steps)
        {
            sb.Append('\n').Append("  ").Append((++n).ToString(CultureInfo.InvariantCulture)).Append(". ").Append(step.Description);
            if (step.Detail is { } detail)
                foreach (var line in detail.TrimEnd('\n').Split('\n')) sb.Append("\n       ").Append(line.Replace("\t", " ", StringComparison.Ordinal));
        }
        return sb.ToString();
    }
}

/// <summary>What applying a plan did: the steps done, the run in the client (if any), the failure that stopped it.</summary>
public sealed record TcpBindingApplyResult(IReadOnlyList<TcpBindingStep> Done, QubeCommandResult? Run, QubesFirewallException? Failure);

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

    public static TcpBindingPlan PlanAdd(IQubesBackend backend, TcpBinding binding, TcpBindingOptions options) =>
        PlanAdd(backend.GetInventory(), binding, options, backend.ReadQubeFile, Dom0PolicyReader.For(backend));

    /// <summary>The pure planner: inventory, request, file reader (qube, path -> content or null), dom0 policy reader.</summary>
    public static TcpBindingPlan PlanAdd(QubesInventory inventory, TcpBinding binding, TcpBindingOptions options,
        Func<string, string, string?> readFile, Dom0PolicyReader dom0)
    {
        var warnings = new List<string>();
        var notes = new List<string>();
        var client = inventory.Get(binding.From);
        var target = inventory.Get(binding.To);
        if (client.Class == QubeClass.AdminVM || target.Class == QubeClass.AdminVM)
            throw QubesFirewallException.Invalid("Dom0NotAllowed", $"A qubes.ConnectTCP binding cannot involve dom0 ('{(client.Class == QubeClass.AdminVM ? client.Name : target.Name)}').", binding.Text);

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
            throw new QubesFirewallException("TcpBindingConflict", FailureKind.ResourceExists,
                $"'{binding.From}' already has a qubes.ConnectTCP binding for port {binding.Port.ToString(CultureInfo.InvariantCulture)}, to '{sameCall.To}' " +
                $"(feature {sameCall.FeatureName}). Its calls name @default, which the policy can send to one target only. Remove that binding first " +
                $"(Remove-QubeTcpBinding -From {sameCall.From} -To {sameCall.To} -Port {sameCall.Port.ToString(CultureInfo.InvariantCulture)}). Nothing was changed.", binding.Text);
        if (binding.Permanent && others.FirstOrDefault(o => o.From == binding.From && o.Permanent && o.LocalPort == binding.LocalPort) is { } sameLocal)
            throw new QubesFirewallException("LocalPortInUse", FailureKind.ResourceExists,
                $"Local port {binding.LocalPort.ToString(CultureInfo.InvariantCulture)} of '{binding.From}' already listens for {sameLocal.Text}. Choose another -LocalPort. Nothing was changed.", binding.Text);

        var previous = existing?.Binding;
        var operation = existing is null ? "Add" : existing.FeatureValue == binding.FeatureValue ? "Reapply" : "Update";
        var after = others.Append(binding).ToList();

        var steps = new List<TcpBindingStep>();
        if (existing?.FeatureValue != binding.FeatureValue)
        {
            steps.Add(new TcpBindingStep
            {
                Kind = TcpBindingStepKind.SetFeature,
                VMName = binding.From,
                FeatureName = binding.FeatureName,
                FeatureValue = binding.FeatureValue,
                Description = $"{binding.From}: {(existing is null ? "set" : "change")} feature {binding.FeatureName} = '{binding.FeatureValue}'",
            });
        }
        if (binding.Permanent || previous?.Permanent == true || existing is { Binding: null })
            steps.AddRange(ClientSteps(inventory, client, after, readFile, options, warnings, removing: !binding.Permanent));
        if (binding.Permanent)
        {
            if (ForwardPersistence.HasCustomPersist(inventory, client))
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
        };
    }

    // ------------------------------------------------------------------ remove

    public static TcpBindingPlan PlanRemove(IQubesBackend backend, string from, string to, int port, TcpBindingOptions options) =>
        PlanRemove(backend.GetInventory(), from, to, port, options, backend.ReadQubeFile, Dom0PolicyReader.For(backend));

    /// <summary>
    /// Plans removing the binding of <paramref name="from"/> to port <paramref name="port"/> of <paramref name="to"/> (also a
    /// hand-written feature with leading zeros or an unreadable value): the policy without its line first, then the
    /// client's section without its listener, the feature last.
    /// </summary>
    public static TcpBindingPlan PlanRemove(QubesInventory inventory, string from, string to, int port, TcpBindingOptions options,
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
            throw new QubesFirewallException("TcpBindingNotFound", FailureKind.ObjectNotFound,
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

        var steps = new List<TcpBindingStep>();
        steps.AddRange(PolicySteps(declarations, null, after, dom0, warnings).Steps);
        if (removed is null || removed.Permanent)
            steps.AddRange(ClientSteps(inventory, client, after, readFile, options, warnings, removing: true));
        foreach (var d in matching)
        {
            steps.Add(new TcpBindingStep
            {
                Kind = TcpBindingStepKind.RemoveFeature,
                VMName = client.Name,
                FeatureName = d.FeatureName,
                Description = $"{client.Name}: remove feature {d.FeatureName} (was '{d.FeatureValue}')",
            });
        }
        return new TcpBindingPlan
        {
            Operation = "Remove",
            Binding = removed,
            From = client.Name,
            To = to,
            Port = port,
            FeatureName = name,
            Steps = steps,
            Warnings = warnings.Distinct().ToList(),
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

    /// <summary>The dom0 policy file the declarations give (null: no binding, no file).</summary>
    public static string? RenderPolicy(QubesInventory inventory) =>
        QrexecPolicy.Render(TcpBindingDeclaration.ReadAll(inventory).Where(d => d.Binding is not null).Select(d => d.Binding!));

    // ------------------------------------------------------------------ apply

    /// <summary>Applies the steps in order; stops at the first failure (an exception, or a client script that exits non-zero).</summary>
    public static TcpBindingApplyResult Apply(IQubesBackend backend, TcpBindingPlan plan)
    {
        var done = new List<TcpBindingStep>();
        QubeCommandResult? run = null;
        foreach (var step in plan.Steps)
        {
            try
            {
                switch (step.Kind)
                {
                    case TcpBindingStepKind.SetFeature:
                        backend.SetFeature(step.VMName, step.FeatureName!, step.FeatureValue!);
                        break;
                    case TcpBindingStepKind.RemoveFeature:
                        backend.RemoveFeature(step.VMName, step.FeatureName!);
                        break;
                    case TcpBindingStepKind.WriteFile:
                        backend.WriteQubeFile(step.VMName, step.Path!, step.Content!, ManagedBlock.FileMode);
                        break;
                    case TcpBindingStepKind.RunScript:
                        run = backend.RunQubeShellScript(step.VMName, step.Script!, $"qubes.ConnectTCP bindings of {step.VMName}");
                        if (!run.Succeeded)
                            throw new QubesFirewallException("TcpBindingScriptFailed", FailureKind.InvalidOperation,
                                $"The listener script failed in '{step.VMName}' (exit code {run.ExitCode.ToString(CultureInfo.InvariantCulture)}): {run.Output.Trim()}", step.VMName);
                        break;
                    case TcpBindingStepKind.WritePolicy:
                        backend.WriteDom0File(step.Path!, step.Content!, QrexecPolicy.FileMode);
                        break;
                    case TcpBindingStepKind.RemovePolicy:
                        backend.DeleteDom0File(step.Path!);
                        break;
                }
                done.Add(step);
            }
            catch (Exception caught) when (caught is QubesFirewallException or IOException or UnauthorizedAccessException)
            {
                var ex = caught as QubesFirewallException
                    ?? new QubesFirewallException("TcpBindingWriteFailed", FailureKind.WriteError, caught.Message, step.Path, caught);
                return new TcpBindingApplyResult(done, run, new QubesFirewallException("TcpBindingPartiallyApplied", ex.Kind, PartialMessage(plan, step, ex, done), plan.FeatureName, ex));
            }
        }
        return new TcpBindingApplyResult(done, run, null);
    }

    private static string PartialMessage(TcpBindingPlan plan, TcpBindingStep failed, QubesFirewallException ex, List<TcpBindingStep> done)
    {
        var sb = new StringBuilder();
        sb.Append(plan.Operation).Append(' ').Append(plan.Target).Append(" stopped at \"").Append(failed.Description).Append("\": ").Append(ex.Message);
        sb.Append(done.Count == 0 ? " Nothing was changed." : " Done before: " + string.Join("; ", done.Select(d => d.Description)) + ".");
        var rest = plan.Steps.SkipWhile(s => !ReferenceEquals(s, failed)).Skip(1).Select(s => s.Description).ToList();
        if (rest.Count > 0) sb.Append(" Not done: ").Append(string.Join("; ", rest)).Append('.');
        sb.Append(plan.Operation == "Remove"
            ? " The policy line goes first, so the client cannot call the target any more where that was done; run Remove-QubeTcpBinding again to finish."
            : " The dom0 policy is written last, so nothing is allowed yet; run the command again to finish, or Remove-QubeTcpBinding to undo.");
        return sb.ToString();
    }

    // ------------------------------------------------------------------ steps

    private static IEnumerable<TcpBindingStep> ClientSteps(QubesInventory inventory, Qube client, IReadOnlyList<TcpBinding> after,
        Func<string, string, string?> readFile, TcpBindingOptions options, List<string> warnings, bool removing = false)
    {
        var byClient = after.Where(b => b.Permanent).GroupBy(b => b.From, StringComparer.Ordinal)
            .ToDictionary(g => g.Key, g => (IReadOnlyList<TcpBinding>)g.ToList(), StringComparer.Ordinal);
        IReadOnlyList<TcpBinding> PermanentOf(Qube q) => byClient.TryGetValue(q.Name, out var l) ? l : [];
        var mine = PermanentOf(client);
        var storage = ForwardPersistence.StorageOf(inventory, client);
        var path = ConnectTcpPersistence.Path;
        if (storage.Name != client.Name)
            warnings.Add($"'{client.Name}' is a disposable of '{storage.Name}': its /rw is a fresh copy of {storage.Name}'s at each start, so its listeners are kept in {storage.Name}'s {path}, " +
                $"in a part that runs only in the qube named {client.Name}; {storage.Name} itself must be running to change it.");

        if (options.RequireRunning && storage.State != PowerState.Running)
        {
            // the live backend reads and writes a qube's /rw through qvm-run, which needs it running
            if (!removing)
                throw new QubesFirewallException("QubeNotRunning", FailureKind.ResourceUnavailable,
                    $"'{storage.Name}' is {storage.State.ToString().ToLowerInvariant()}: its {path} can be read and changed only while it runs. Start it (qvm-start {storage.Name}) and run the command again" +
                    " (or declare the binding without -Permanent). Nothing was changed.", storage.Name);
            warnings.Add($"'{storage.Name}' is {storage.State.ToString().ToLowerInvariant()}, so its {path} is left as it is: its qubes.ConnectTCP part still starts the listener at boot, " +
                $"which is harmless once the policy refuses the call. The part is rebuilt from the declarations the next time a binding of {client.Name} changes while {storage.Name} runs.");
            yield break;
        }
        var current = readFile(storage.Name, path);
        string? content;
        try
        {
            var body = ConnectTcpPersistence.ReplacePart(ManagedBlock.Extract(current), ConnectTcpPersistence.Part(inventory, storage, PermanentOf));
            content = body.Trim().Length == 0 ? ManagedBlock.Remove(current) : ManagedBlock.Upsert(current, body);
        }
        catch (QubesFirewallException ex) when (ex.ErrorId == "ManagedBlockDamaged")
        {
            throw new QubesFirewallException(ex.ErrorId, ex.Kind, $"{storage.Name}:{path}: {ex.Message}", $"{storage.Name}:{path}");
        }
        if (content is not null && content != current)
        {
            var what = ManagedBlock.Extract(content) is null ? "remove the managed block" : current is null ? "create it (#!/bin/sh, mode 0755) with the managed block"
                : ManagedBlock.Extract(current) is null ? "add the managed block (mode 0755)" : "replace the qubes.ConnectTCP part of the managed block (mode 0755)";
            yield return new TcpBindingStep
            {
                Kind = TcpBindingStepKind.WriteFile,
                VMName = storage.Name,
                Path = path,
                Content = content,
                Description = storage.Name == client.Name
                    ? $"{client.Name}: write {path}: {what} ({Count(mine)})"
                    : $"{storage.Name}: write {path} for {client.Name} (a disposable of {storage.Name}): {what} ({Count(mine)})",
            };
        }
        if (options.RequireRunning && client.State != PowerState.Running)
        {
            warnings.Add($"'{client.Name}' is not running: nothing is started in it now; its listeners follow its rc.local when it starts.");
            yield break;
        }
        var detail = new StringBuilder();
        foreach (var b in mine.OrderBy(b => b.LocalPort))
            detail.Append(ConnectTcpUnits.SocketUnitName(b.LocalPort)).Append(": ListenStream=127.0.0.1:").Append(b.LocalPort.ToString(CultureInfo.InvariantCulture))
                  .Append(", Accept=true; ").Append(ConnectTcpUnits.ServiceUnitName(b.LocalPort)).Append(": ").Append(ConnectTcpUnits.QrexecClientVm).Append(" @default ").Append(b.Call).Append('\n');
        if (mine.Count == 0) detail.Append("(no binding left: stops and removes the module's qubesfirewall-tcp-* units, or its socat listeners)\n");
        yield return new TcpBindingStep
        {
            Kind = TcpBindingStepKind.RunScript,
            VMName = client.Name,
            Script = ConnectTcpUnits.Render(client.Name, mine),
            Description = $"{client.Name}: run as root its listener script ({Count(mine)}; the script of its rc.local part): systemd socket units, or socat listeners where systemd does not run:",
            Detail = detail.ToString(),
        };
    }

    private static string Count(IReadOnlyList<TcpBinding> list) =>
        list.Count == 0 ? "no permanent binding left" : list.Count == 1 ? "1 permanent binding" : $"{list.Count.ToString(CultureInfo.InvariantCulture)} permanent bindings";

    private static (IReadOnlyList<TcpBindingStep> Steps, string? Content) PolicySteps(IReadOnlyList<TcpBindingDeclaration> before, TcpBindingDeclaration? replaced,
        IReadOnlyList<TcpBinding> after, Dom0PolicyReader dom0, List<string> warnings)
    {
        var content = QrexecPolicy.Render(after);
        var current = dom0.Read(QrexecPolicy.FilePath);
        var expected = QrexecPolicy.Render(before.Where(d => d.Binding is not null).Select(d => d.Binding!));
        if (current is not null && current != expected && current != content)
            warnings.Add($"dom0's {QrexecPolicy.FilePath} is not what the declarations give (edited by hand, or written from other features): it is rewritten whole from the qubesfirewall.tcp.* features.");
        if (content == current) return ([], content);
        if (content is null)
            return ([new TcpBindingStep
            {
                Kind = TcpBindingStepKind.RemovePolicy,
                VMName = Dom0,
                Path = QrexecPolicy.FilePath,
                Description = $"dom0: remove {QrexecPolicy.FilePath} (no binding left)",
            }], null);
        var lines = content.Split('\n').Where(l => l.Length > 0 && !l.StartsWith('#')).ToList();
        return ([new TcpBindingStep
        {
            Kind = TcpBindingStepKind.WritePolicy,
            VMName = Dom0,
            Path = QrexecPolicy.FilePath,
            Content = content,
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

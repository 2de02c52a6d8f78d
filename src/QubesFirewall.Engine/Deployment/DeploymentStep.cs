using System.Globalization;
using System.Text;
using QubesFirewall.Engine.Backends;
using QubesFirewall.Engine.Persistence;

namespace QubesFirewall.Engine.Deployment;

public enum DeploymentStepKind
{
    /// <summary>Set a qube feature (the declaration of a forward or binding).</summary>
    SetFeature,
    RemoveFeature,
    /// <summary>Replace a file of a qube's /rw (a hook file with the managed block, the agent), or delete it (no content).</summary>
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

    /// <summary>More lines for -WhatIf (the nft commands a run executes, the policy lines; the rules of a rule-list edit).</summary>
    public string? Detail
    {
        get => _detail ?? (RulesAsDetail && Firewall is { Steps.Count: > 0 } change ? RuleLines(change.Steps) : null);
        init
        {
            _detail = value;
            RulesAsDetail = false;
        }
    }

    private readonly string? _detail;

    // Set by EditFirewall: the detail is the change's rules, one line each, made only when asked for. The plan's text
    // (AppendList) writes them straight into its own buffer: a 10,000-rule Add made a 10,000-line string for it to copy.
    private bool RulesAsDetail { get; init; }

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

    /// <summary>For <see cref="DeploymentStepKind.RunScript"/>: the error id a failed run reports (null: the plan's own).</summary>
    public string? FailureId { get; init; }

    /// <summary>For <see cref="DeploymentStepKind.EditFirewall"/>: the planned rule-list change; a rollback applies its inverse.</summary>
    public FirewallChange? Firewall { get; init; }

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

    /// <summary>
    /// Writes a whole file of <paramref name="storage"/>'s /rw for <paramref name="forQube"/> (null <paramref name="content"/>:
    /// deletes it); <paramref name="previous"/> is the file as read now (null: none), checked again just before the write and
    /// written back by a rollback. Null when the file already is so.
    /// </summary>
    public static DeploymentStep? QubeFile(string storage, string forQube, string path, string? content, string? previous, string description) =>
        content == previous ? null : new DeploymentStep
        {
            Kind = DeploymentStepKind.WriteFile,
            VMName = storage,
            ForQube = forQube,
            StoredIn = storage,
            Path = path,
            Content = content,
            PreviousContent = previous,
            Mode = ManagedBlock.FileMode,
            Description = description,
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
    public static DeploymentStep EditFirewall(FirewallChange change, string description) => new()
    {
        Kind = DeploymentStepKind.EditFirewall,
        VMName = change.VMName,
        Firewall = change,
        Description = description,
        RulesAsDetail = true,
    };

    // "action: target" per rule, one line each.
    private static string RuleLines(IReadOnlyList<FirewallChangeStep> steps)
    {
        var length = steps.Count - 1;
        foreach (var step in steps) length += step.Action.Length + 2 + step.Target.Length;
        return string.Create(length, steps, static (span, steps) =>
        {
            var at = 0;
            foreach (var step in steps)
            {
                if (at > 0) span[at++] = '\n';
                step.Action.CopyTo(span[at..]);
                at += step.Action.Length;
                span[at++] = ':';
                span[at++] = ' ';
                step.Target.CopyTo(span[at..]);
                at += step.Target.Length;
            }
        });
    }

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
        return QubeFile(storage, forQube, path, content, current, storage == forQube
            ? $"{forQube}: write {path}: {what} ({role})"
            : $"{storage}: write {path} for {forQube} (a disposable of {storage}): {what} ({role})");
    }

    /// <summary>The numbered step list of a plan for -WhatIf, details indented.</summary>
    public static void AppendList(StringBuilder sb, IReadOnlyList<DeploymentStep> steps, string tab = "  ")
    {
        // Room for the whole list first: a 10,000-rule Add lists a line per rule, so the builder would grow (and copy) many times.
        var length = 0;
        foreach (var step in steps)
        {
            if (RuleLinesOf(step) is { } rules)
                foreach (var rule in rules) length += rule.Action.Length + rule.Target.Length + 9;
            else if (step.Detail is { } detail) length += detail.Length + MemoryExtensions.Count(detail.AsSpan(), '\n') * 8 + 8;
        }
        sb.EnsureCapacity(sb.Length + length + steps.Count * 64);
        var n = 0;
        foreach (var step in steps)
        {
            sb.Append('\n').Append("  ").Append((++n).ToString(CultureInfo.InvariantCulture)).Append(". ").Append(step.Description);
            if (RuleLinesOf(step) is { } rules)
            {
                // The lines Detail would give, without making it first (no line break in any of them: see RuleLinesOf).
                foreach (var rule in rules)
                {
                    sb.Append("\n       ");
                    AppendTabbed(sb, rule.Action, tab);
                    sb.Append(": ");
                    AppendTabbed(sb, rule.Target, tab);
                }
                continue;
            }
            if (step.Detail is not { } text) continue;
            // Each line of the detail indented; walked in place rather than split into strings.
            var rest = text.AsSpan().TrimEnd('\n');
            while (true)
            {
                var end = rest.IndexOf('\n');
                sb.Append("\n       ");
                AppendTabbed(sb, end < 0 ? rest : rest[..end], tab);
                if (end < 0) break;
                rest = rest[(end + 1)..];
            }
        }
    }

    // The rule steps whose lines are a step's detail, when it is a rule-list edit's and no line has a line break of its own
    // (rule texts cannot; were one there, the detail's text is split as any other).
    private static IReadOnlyList<FirewallChangeStep>? RuleLinesOf(DeploymentStep step)
    {
        if (!step.RulesAsDetail || step.Firewall is not { Steps.Count: > 0 } change) return null;
        foreach (var rule in change.Steps)
            if (rule.Action.Contains('\n') || rule.Target.Contains('\n')) return null;
        return change.Steps;
    }

    // A line with each tab made `tab`.
    private static void AppendTabbed(StringBuilder sb, ReadOnlySpan<char> line, string tab)
    {
        for (var t = line.IndexOf('\t'); t >= 0; t = line.IndexOf('\t'))
        {
            sb.Append(line[..t]).Append(tab);
            line = line[(t + 1)..];
        }
        sb.Append(line);
    }
}

using QubesFirewall.Engine.Backends;
using QubesFirewall.Engine.Deployment;
using QubesFirewall.Engine.Model;
using QubesFirewall.Engine.Persistence;

namespace QubesFirewall.Engine.Agent;

/// <summary>What Install-, Test- and Uninstall-QubeFirewallAgent found or did in one qube.</summary>
public enum AgentState
{
    /// <summary>Install: written now (or written again: an earlier version was there).</summary>
    Installed,
    /// <summary>Install: already there, same version; nothing written.</summary>
    Unchanged,
    /// <summary>Test: the qube records the version this module ships.</summary>
    Current,
    /// <summary>Test: the qube records another version: run Install-QubeFirewallAgent again.</summary>
    Outdated,
    /// <summary>Test: no agent recorded on the qube.</summary>
    Missing,
    /// <summary>Uninstall: files and record removed.</summary>
    Removed,
}

/// <summary>One qube's agent: where it is kept, the version, what happened (Install-/Test-/Uninstall-QubeFirewallAgent output).</summary>
public sealed record QubeFirewallAgent
{
    public required string VMName { get; init; }

    /// <summary>The qube whose /rw keeps the agent (a disposable's template).</summary>
    public required string StoredIn { get; init; }

    /// <summary>The hook that starts it: qubes-firewall.d in network qubes, rc.local.d elsewhere.</summary>
    public required string HookPath { get; init; }

    /// <summary>The version recorded on the qube (feature <c>qubesfirewall.agent</c>), null when none.</summary>
    public string? Version { get; init; }

    /// <summary>The version this module ships.</summary>
    public string ModuleVersion { get; init; } = AgentScript.Version;

    public AgentState State { get; init; }

    /// <summary>Install: files of earlier versions whose managed block was removed (the user's own lines kept).</summary>
    public IReadOnlyList<string> Migrated { get; init; } = [];

    /// <summary>Whether the agent was started (or stopped) in the running qube now.</summary>
    public bool Started { get; init; }

    /// <summary>-Deep: the agent's status line as read from the qube (sanitized), null when not read.</summary>
    public string? Status { get; init; }

    public string? Message { get; init; }

    public override string ToString() => $"{VMName}: {State}";
}

/// <summary>
/// The one place that writes into qubes: installs the agent (<see cref="AgentScript"/>) where the qube keeps it across
/// restarts, with the hook that starts it, migrates away the managed blocks of earlier versions, records the version on
/// the qube (feature <c>qubesfirewall.agent</c>), and starts it in the qube when it runs. Idempotent.
/// </summary>
public static class AgentInstaller
{
    /// <summary>The hook files of earlier versions, whose managed block Install removes but for its qubes.ConnectTCP bindings (the user's lines stay byte for byte).</summary>
    public static readonly string[] LegacyFiles = [HookFiles.FirewallUserScript, HookFiles.RcLocal];

    /// <summary>Where the hook goes: network qubes that run qubes-firewall start it from qubes-firewall.d, the others from rc.local.d.</summary>
    public static string HookPathFor(Qube qube) => QubesFacts.RunsFirewallService(qube) ? AgentScript.FirewallHookPath : AgentScript.RcLocalHookPath;

    /// <summary>The qube whose /rw keeps the agent: the qube, or a disposable's template (then a confirmation names it).</summary>
    public static Qube StorageOf(QubesInventory inventory, Qube qube) => HookFiles.StorageOf(inventory, qube);

    /// <summary>
    /// The question asked once before installing into a disposable's template, or null for other qubes.
    /// </summary>
    public static string? DisposableQuestion(QubesInventory inventory, Qube qube)
    {
        var storage = StorageOf(inventory, qube);
        if (storage.Name == qube.Name) return null;
        var firewall = QubesFacts.RunsFirewallService(qube);
        return $"'{qube.Name}' is a disposable of '{storage.Name}': its /rw is a fresh copy of {storage.Name}'s at each start, so the agent is kept in {storage.Name}'s " +
            (firewall
                ? $"/rw/config/qubes-firewall.d, which only network qubes running qubes-firewall execute: ordinary disposables of {storage.Name} never run it."
                : $"/rw/config/rc.local.d: every disposable of {storage.Name} starts it; with no key of its own it changes nothing there.") +
            $" Nothing is written into {storage.Name} for later changes: they reach {qube.Name} through its own features.";
    }

    /// <summary>What Test finds from dom0 facts only (the feature on the qube): nothing is read from the qube.</summary>
    public static QubeFirewallAgent Test(QubesInventory inventory, string vmName)
    {
        var qube = inventory.Get(Validation.QubeName.Validate(vmName));
        var version = qube.Features.GetValueOrDefault(AgentScript.VersionFeature);
        var state = version is null ? AgentState.Missing : version == AgentScript.Version ? AgentState.Current : AgentState.Outdated;
        return new QubeFirewallAgent
        {
            VMName = qube.Name,
            StoredIn = StorageOf(inventory, qube).Name,
            HookPath = HookPathFor(qube),
            Version = version,
            State = state,
            Message = state switch
            {
                AgentState.Missing => $"No agent recorded: Install-QubeFirewallAgent -VMName {qube.Name}",
                AgentState.Outdated => $"Version {version} recorded, the module ships {AgentScript.Version}: Install-QubeFirewallAgent -VMName {qube.Name}",
                _ => null,
            },
        };
    }

    /// <summary>
    /// -Deep: the agent's status line read from the running qube (one bounded qvm-run read; the line must match the agent's
    /// grammar, anything else is shown escaped). Null offline or for a halted qube.
    /// </summary>
    public static string? ReadStatus(IQubesBackend backend, Qube qube) =>
        AgentStatus.Read(backend, qube) is { Kind: not AgentStatusReadingKind.NotRead } reading ? reading.Text : null;

    /// <summary>The qubes that record no agent (the feature's name is enough: its value, the version, is not read), among <paramref name="names"/>; what forward and link cmdlets name in QubeFirewallAgentMissing.</summary>
    public static IReadOnlyList<string> Missing(QubesInventory inventory, IEnumerable<string> names) =>
        names.Distinct(StringComparer.Ordinal).Where(n => inventory.Find(n) is { } q && !q.Features.ContainsKey(AgentScript.VersionFeature)).ToList();

    /// <summary>
    /// The plan that installs (or updates) the agent of one qube: refuses under R4.3's custom-persist (Qubes skips the /rw
    /// hooks there); writes the agent and its hook where the qube keeps them (and, for a running disposable, into the
    /// disposable too, so it starts now) where they differ; removes the managed blocks earlier versions wrote; starts the
    /// agent when the qube runs (a failed start puts everything back: AgentStartFailed); records the version last.
    /// Reads the files it may write (live: inside the qubes).
    /// </summary>
    public static Plan PlanInstall(IQubesBackend backend, string vmName)
    {
        var inventory = backend.GetInventory();
        var qube = inventory.Get(Validation.QubeName.Validate(vmName));
        if (qube.Class is QubeClass.AdminVM or QubeClass.TemplateVM)
            throw new QubesFirewallException(ErrorIds.AgentNotForThisQube, FailureKind.InvalidOperation,
                $"'{qube.Name}' is {(qube.Class == QubeClass.AdminVM ? "dom0" : "a template")}: the agent runs in qubes that pass or receive forwarded traffic.", qube.Name);
        if (HookFiles.HasCustomPersist(inventory, qube))
            throw new QubesFirewallException(ErrorIds.CustomPersist, FailureKind.InvalidOperation,
                $"'{qube.Name}' has the R4.3 custom-persist service on: Qubes does not run the /rw/config hooks there, so the agent would never start. " +
                $"Turn custom-persist off for it (qvm-service --disable {qube.Name} custom-persist), or have its template start the agent. Nothing was changed.", qube.Name);
        var storage = StorageOf(inventory, qube);
        var hookPath = HookPathFor(qube);
        var hook = AgentScript.HookText(hookPath == AgentScript.FirewallHookPath);
        var targets = new List<string> { storage.Name };
        if (storage.Name != qube.Name && qube.State == PowerState.Running) targets.Add(qube.Name);
        var steps = new List<DeploymentStep>();
        void Add(DeploymentStep? step) { if (step is not null) steps.Add(step); }
        foreach (var where in targets)
        {
            var also = where == qube.Name ? "" : $" for {qube.Name}";
            Add(DeploymentStep.QubeFile(where, qube.Name, AgentScript.AgentPath, AgentScript.Text, backend.ReadQubeFile(where, AgentScript.AgentPath),
                $"{where}: write {AgentScript.AgentPath}{also} (the agent {AgentScript.Version}, mode 0755)"));
            Add(DeploymentStep.QubeFile(where, qube.Name, hookPath, hook, backend.ReadQubeFile(where, hookPath), $"{where}: write {hookPath}{also} (the hook that starts the agent)"));
            foreach (var path in LegacyFiles)
            {
                var content = backend.ReadQubeFile(where, path);
                var block = ManagedBlock.Extract(content);
                // the forwards' and links' rules go; permanent qubes.ConnectTCP bindings still live in rc.local's block and stay
                var bindings = ConnectTcpPersistence.Extract(block);
                if (block is null || block == bindings) continue;
                var without = bindings.Length > 0 ? ManagedBlock.Upsert(content, bindings) : ManagedBlock.Remove(content) ?? "";
                Add(DeploymentStep.QubeFile(where, qube.Name, path, without, content, $"{where}: write {path}: remove the managed block of an earlier version (the other lines unchanged)"));
            }
        }
        if (qube.State == PowerState.Running)
            steps.Add(new DeploymentStep
            {
                Kind = DeploymentStepKind.RunScript,
                VMName = qube.Name,
                Script = $"{AgentScript.AgentPath} hook\n",
                ScriptName = "start the QubesFirewall agent",
                FailureId = ErrorIds.AgentStartFailed,
                Description = $"{qube.Name}: start the agent ({AgentScript.AgentPath} hook)",
            });
        Add(DeploymentStep.SetFeature(qube.Name, AgentScript.VersionFeature, AgentScript.Version, qube.Features.GetValueOrDefault(AgentScript.VersionFeature)));
        var kept = storage.Name == qube.Name ? "" : $", kept in {storage.Name}";
        return new Plan
        {
            Operation = PlanOperation.Install,
            Target = qube.Name,
            Description = $"Install the QubesFirewall agent {AgentScript.Version} in {qube.Name} ({AgentScript.AgentPath}, {hookPath}{kept}):",
            Purpose = $"install the QubesFirewall agent {AgentScript.Version} in {qube.Name}",
            Steps = steps,
            UndoCommand = $"Uninstall-QubeFirewallAgent -VMName {qube.Name}",
        };
    }

    /// <summary>
    /// The plan that stops the agent in the running qube, deletes its files (a rollback writes them back and starts it again)
    /// and removes the version record. The rules it applied last stay until the qube restarts.
    /// </summary>
    public static Plan PlanUninstall(IQubesBackend backend, string vmName)
    {
        var inventory = backend.GetInventory();
        var qube = inventory.Get(Validation.QubeName.Validate(vmName));
        var storage = StorageOf(inventory, qube);
        var hookPath = HookPathFor(qube);
        var steps = new List<DeploymentStep>();
        if (qube.State == PowerState.Running)
            steps.Add(new DeploymentStep
            {
                Kind = DeploymentStepKind.RunScript,
                VMName = qube.Name,
                Script = "systemctl stop qubesfw-agent.service 2>/dev/null\npid=$(cat /run/qubesfw/agent.pid 2>/dev/null) && kill -TERM -\"$pid\" 2>/dev/null\nexit 0\n",
                ScriptName = "stop the QubesFirewall agent",
                PreviousScript = $"{AgentScript.AgentPath} hook\n",
                Description = $"{qube.Name}: stop the agent",
            });
        foreach (var where in new[] { storage.Name, qube.Name }.Distinct(StringComparer.Ordinal))
        {
            if (where != storage.Name && qube.State != PowerState.Running) continue;
            foreach (var path in new[] { hookPath, AgentScript.AgentPath })
                if (DeploymentStep.QubeFile(where, qube.Name, path, null, backend.ReadQubeFile(where, path), $"{where}: delete {path}") is { } delete) steps.Add(delete);
        }
        if (qube.Features.GetValueOrDefault(AgentScript.VersionFeature) is { } recorded)
            steps.Add(DeploymentStep.RemoveFeature(qube.Name, AgentScript.VersionFeature, recorded));
        return new Plan
        {
            Operation = PlanOperation.Uninstall,
            Target = qube.Name,
            Description = $"Uninstall the QubesFirewall agent from {qube.Name}:",
            Purpose = $"uninstall the QubesFirewall agent from {qube.Name}",
            Steps = steps,
            UndoCommand = $"Install-QubeFirewallAgent -VMName {qube.Name}",
        };
    }

    /// <summary>What an install deployed (<see cref="PlanInstall"/> applied without failure) did in its qube.</summary>
    public static QubeFirewallAgent Installed(QubesInventory inventory, PlanResult done)
    {
        var qube = inventory.Get(done.Plan.Target);
        var changed = done.Result.Steps.Where(s => s.Status is DeploymentStepStatus.Applied or DeploymentStepStatus.Recorded && s.Step.Kind != DeploymentStepKind.RunScript).ToList();
        var migrated = changed.Where(s => s.Step.Kind == DeploymentStepKind.WriteFile && LegacyFiles.Contains(s.Step.Path)).Select(s => $"{s.Step.VMName}:{s.Step.Path}").ToList();
        return new QubeFirewallAgent
        {
            VMName = qube.Name,
            StoredIn = StorageOf(inventory, qube).Name,
            HookPath = HookPathFor(qube),
            Version = AgentScript.Version,
            State = changed.Count > 0 ? AgentState.Installed : AgentState.Unchanged,
            Migrated = migrated,
            Started = Ran(done),
            Message = migrated.Count > 0 ? $"Removed the managed block of earlier versions from {string.Join(", ", migrated)}; the other lines are unchanged." : null,
        };
    }

    /// <summary>What an uninstall deployed (<see cref="PlanUninstall"/> applied without failure) did in its qube.</summary>
    public static QubeFirewallAgent Uninstalled(QubesInventory inventory, PlanResult done)
    {
        var qube = inventory.Get(done.Plan.Target);
        return new QubeFirewallAgent
        {
            VMName = qube.Name,
            StoredIn = StorageOf(inventory, qube).Name,
            HookPath = HookPathFor(qube),
            Version = null,
            State = AgentState.Removed,
            Started = Ran(done),
            Message = "The rules the agent applied last stay until the qube restarts; forwards and links through it need the agent again.",
        };
    }

    private static bool Ran(PlanResult done) => done.Result.Steps.Any(s => s.Step.Kind == DeploymentStepKind.RunScript && s.Command?.Executed == true);

    /// <summary>Installs (or updates) the agent of one qube now (<see cref="PlanInstall"/>, deployed); throws what stopped it.</summary>
    public static QubeFirewallAgent Install(IQubesBackend backend, string vmName)
    {
        var done = PlanInstall(backend, vmName).Apply(backend, replan: () => PlanInstall(backend, vmName));
        if (done.Failure is { } failure) throw failure;
        return Installed(backend.GetInventory(), done);
    }
}

using QubesFirewall.Engine.Formats;
using QubesFirewall.Engine.Model;

namespace QubesFirewall.Engine.Backends;

/// <summary>
/// Where qubes, rules and features live: an offline Qubes root (a directory laid out like dom0's
/// /var/lib/qubes) or the live dom0 through qubesd's Admin API. Cmdlets and planners see only this.
/// </summary>
public interface IQubesBackend : IDisposable
{
    /// <summary>Names the backend for messages: "offline root /path" or "qubesd at /var/run/qubesd.sock".</summary>
    string Description { get; }

    // ------------------------------------------------------------------ what the engine needs to know of a backend
    // (asked here, never by testing its class). Starting qubes (StartQube), the deployment lock (LockDeployments,
    // null when there is none) and dom0's files (Dom0FilesNotSupported when there are none) are members below.

    /// <summary>
    /// True when files and scripts reach the running qubes themselves (live: qvm-run), so the qubes a change
    /// reaches must run and their agents can be asked; false when every change to a qube is recorded in a state
    /// folder instead (the offline root), so nothing has to run and nothing is waited for.
    /// </summary>
    bool RunsInQubes => true;

    /// <summary>The qube names, for completion at each Tab: by default from the inventory; live one admin.vm.List.</summary>
    IReadOnlyList<string> ListQubeNames() => GetInventory().Qubes.Select(q => q.Name).ToList();

    /// <summary>How many calls this backend made to a service (live: Admin API calls to qubesd); null when it calls none.</summary>
    long? CallCount => null;

    /// <summary>Forgets what was read and kept (the inventory), so the next read sees changes made meanwhile.</summary>
    void Invalidate() { }

    QubesInventory GetInventory();

    /// <summary>The qube's stored rule list, expired rules included (Get leaves them out).</summary>
    FirewallDocument GetFirewall(string vmName);

    /// <summary>
    /// Writes an edit planned on <paramref name="snapshot"/>. The offline root re-applies it to the
    /// file as it is under an exclusive lock (writers serialize, nothing is lost); the live backend
    /// re-reads and refuses if someone changed the list since the snapshot.
    /// </summary>
    FirewallEditOutcome ApplyFirewallEdit(string vmName, FirewallEdit edit, FirewallDocument snapshot);

    /// <summary>
    /// Makes the qube's network qube enforce its current rules, as qubesd does on reload; returns
    /// the entries the network qube gets (rendered by the engine).
    /// </summary>
    IReadOnlyList<QubesDbEntry> SyncFirewall(string vmName);

    void SetFeature(string vmName, string name, string value);

    /// <summary>Removes a feature; false when it was not there.</summary>
    bool RemoveFeature(string vmName, string name);

    /// <summary>
    /// What the executor reads again just before it first writes a feature of the qube: the values <paramref name="names"/>
    /// have now (null: not set). By default from a new inventory (the offline root reads qubes.xml at each call); the
    /// live backend lists the qube's features anew and reads values as its own documentation says.
    /// </summary>
    IReadOnlyDictionary<string, string?> ReadFeaturesNow(string vmName, IReadOnlyCollection<string> names)
    {
        var features = GetInventory().Get(vmName).Features;
        return names.Distinct(StringComparer.Ordinal).ToDictionary(n => n, n => features.TryGetValue(n, out var value) ? value : null, StringComparer.Ordinal);
    }

    /// <summary>
    /// What the executor reads again just before it first writes a property of the qube: the properties set on it now
    /// (<see cref="Qube.Properties"/>: those not at their default). By default from a new inventory; live one GetAll.
    /// </summary>
    IReadOnlyDictionary<string, string> ReadPropertiesNow(string vmName) => GetInventory().Get(vmName).Properties;

    /// <summary>
    /// Reads a file of a qube's persistent storage, e.g. <c>/rw/config/rc.local</c>; null when it
    /// does not exist. Offline: the state folder's copy; live: read through qvm-run.
    /// </summary>
    string? ReadQubeFile(string vmName, string path);

    /// <summary>
    /// The permission bits of a file of a qube's persistent storage (null: it does not exist, or the backend cannot
    /// tell). A rollback writes the previous content back with the previous mode: a hook file that was 0644
    /// (deliberately not run) stays 0644.
    /// </summary>
    UnixFileMode? ReadQubeFileMode(string vmName, string path) => null;

    /// <summary>Replaces a file of a qube's persistent storage atomically, with the given mode.</summary>
    void WriteQubeFile(string vmName, string path, string content, UnixFileMode mode);

    /// <summary>Deletes a file of a qube's persistent storage (a rollback removing a file the plan created); no error when it is not there.</summary>
    void DeleteQubeFile(string vmName, string path);

    /// <summary>
    /// Holds off other deployments into qubes of this backend until disposed, so that a plan made under it
    /// (files read) is written before anyone else plans: the offline root locks a file of its state folder,
    /// across processes; the live backend a lock file in the user's runtime directory (qubesd has none), and
    /// each file is read again just before it is written as well. Null when the backend has no such lock.
    /// </summary>
    IDisposable? LockDeployments() => null;

    /// <summary>
    /// Runs a persisted script in the qube now (one <c>nft -f</c> transaction inside it), so a change
    /// takes effect without a restart. Offline: recorded in the state folder, not run.
    /// </summary>
    QubeCommandResult RunQubeScript(string vmName, string path);

    /// <summary>
    /// Starts a halted qube (live: <c>admin.vm.Start</c>, which returns once it runs; offline: its
    /// power state becomes Running). Hops of a rollout are started only when the user asked for it.
    /// </summary>
    void StartQube(string vmName);

    /// <summary>Sets a qube property (live: <c>admin.vm.property.Set</c>, qubesd validates; offline: qubes.xml).</summary>
    void SetProperty(string vmName, string name, string value);

    /// <summary>Resets a qube property to its default (live: <c>admin.vm.property.Reset</c>; offline: removed from qubes.xml).</summary>
    void ResetProperty(string vmName, string name);

    /// <summary>
    /// Completes the re-attach of a qube whose netvm was just set to its current value (Repair-QubeNetVm). Live: nothing to
    /// do, qubesd detached, attached and reloaded its firewall on the set. Offline: its firewall entries are written
    /// into the network qube's QubesDB and the re-attach (<paramref name="commands"/>) logged in the state folder.
    /// </summary>
    void NetworkReattached(string vmName, string netVm, string commands) { }

    /// <summary>
    /// -WhatIf: until the scope ends, changes are reported (every call and every file content that
    /// would be sent) instead of made. Null when the backend has nothing more to show than the plan.
    /// </summary>
    IDisposable? BeginDryRun(Action<string> report) => null;

    /// <summary>
    /// Runs a generated shell script as root in the qube now (read from standard input by <c>/bin/sh</c>),
    /// without writing it anywhere: the port-forward scripts of a qube run on their own, never the whole
    /// hook file they are kept in (the user's lines there may not bear running twice).
    /// Offline: recorded in the state folder, not run. The default implementation, for backends that
    /// only run files, keeps the script in <c>/rw/config/qubesfirewall/run-now.sh</c> and runs that file.
    /// </summary>
    QubeCommandResult RunQubeShellScript(string vmName, string script, string description)
    {
        const string path = "/rw/config/qubesfirewall/run-now.sh";
        WriteQubeFile(vmName, path, "#!/bin/sh\n# " + description.Replace('\n', ' ') + "\n" + script,
            UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
        return RunQubeScript(vmName, path);
    }

    // ------------------------------------------------------------------ dom0 files (qrexec policy)
    // Only the paths Dom0Files allows: the module's own policy file in /etc/qubes/policy.d (write, delete),
    // the policy files there and in /etc/qubes-rpc/policy (list, read). Offline: under
    // qubesfirewall-state/dom0/; live: dom0's own files (AdminApiBackend.Dom0Root).

    /// <summary>The names of the files of a dom0 directory, in ordinal order; empty when it does not exist.</summary>
    IReadOnlyList<string> ListDom0Files(string directory) =>
        throw NoDom0Files(Description, directory);

    /// <summary>A dom0 file's content; null when it does not exist.</summary>
    string? ReadDom0File(string path) =>
        throw NoDom0Files(Description, path);

    /// <summary>Replaces a dom0 file atomically (temporary name that qrexec ignores, then rename), with the given mode.</summary>
    void WriteDom0File(string path, string content, UnixFileMode mode) =>
        throw NoDom0Files(Description, path);

    /// <summary>Removes a dom0 file; false when it was not there.</summary>
    bool DeleteDom0File(string path) =>
        throw NoDom0Files(Description, path);

    /// <summary>The Dom0FilesNotSupported error of a backend without dom0's files (an offline root).</summary>
    private static QubesFirewallException NoDom0Files(string description, string path) =>
        new(ErrorIds.Dom0FilesNotSupported, FailureKind.NotImplemented, $"{description} has no access to dom0's files.", path);
}

/// <summary>What running a script in a qube did.</summary>
public sealed record QubeCommandResult(string VMName, string Path, int ExitCode, string Output, bool Executed)
{
    public bool Succeeded => ExitCode == 0;
}

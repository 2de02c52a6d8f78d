using System.Diagnostics;
using System.Runtime.InteropServices;
using System.Text;
using QubesFirewall.Engine.Agent;
using QubesFirewall.Lab.Tests.Lab;

namespace QubesFirewall.Lab.Tests;

/// <summary>
/// The agent (the module's own <see cref="AgentScript.Text"/>) running in the lab's qubes, fed by a QubesDB stand-in:
/// per qube a folder with one file per key and an event log, and shell stand-ins for <c>qubesdb-read</c>,
/// <c>qubesdb-multiread</c> and <c>qubesdb-watch</c> (same arguments and output as core-qubesdb's: multiread prints
/// <c>&lt;path without prefix&gt; = &lt;value&gt;</c> in path order; watch prints each path that fired under a watched
/// prefix, <c>-n -1</c> forever) and for <c>systemd-run --unit=</c> (starts the command detached, refuses a second
/// start of a unit that runs), first on the PATH of the hook. <see cref="SetFeature"/> does what qubesd does for a
/// running qube's <c>vm-config.*</c> feature: writes <c>/vm-config/&lt;name&gt;</c> and fires the watches.
/// Disposing kills the agents it started (each leads its own process group).
/// </summary>
public sealed class AgentLab : IDisposable
{
    private const string QubesDbRead = """
        #!/bin/sh
        # qubesdb-read stand-in: values from $QFW_QDB/db<path>
        rc=0
        for path; do
        	case $path in -*) continue ;; esac
        	if [ -f "$QFW_QDB/db$path" ]; then cat "$QFW_QDB/db$path"; echo; else echo "Failed to read $path" >&2; rc=1; fi
        done
        exit $rc
        """;

    private const string QubesDbMultiread = """
        #!/bin/sh
        # qubesdb-multiread stand-in: every key whose path starts with the prefix, in path order, '<rest> = <value>'
        p=$1
        cd "$QFW_QDB/db" || exit 1
        find . -type f | sed 's|^\.||' | LC_ALL=C sort | while IFS= read -r path; do
        	case $path in "$p"*) printf '%s = %s\n' "${path#"$p"}" "$(cat "$QFW_QDB/db$path")" ;; esac
        done
        """;

    private const string QubesDbWatch = """
        #!/bin/sh
        # qubesdb-watch stand-in: prints each changed path under a watched one (a path ending in / is a prefix); -n N events, -1 forever
        n=1
        if [ "$1" = -n ]; then n=$2; shift 2; fi
        # a slow registration, when a test asks for one: what happens before it is not seen
        [ -n "${QFW_WATCH_DELAY:-}" ] && sleep "$QFW_WATCH_DELAY"
        start=$(($(wc -l <"$QFW_QDB/events") + 1))
        tail -n +$start -f "$QFW_QDB/events" | while IFS= read -r p; do
        	for w; do
        		case $w in */) case $p in "$w"*) ;; *) continue ;; esac ;; *) [ "$p" = "$w" ] || continue ;; esac
        		printf '%s\n' "$p"
        		n=$((n - 1))
        		[ "$n" -eq 0 ] && exit 0
        		break
        	done
        done
        """;

    private const string SystemdRun = """
        #!/bin/sh
        # systemd-run stand-in: --unit=NAME runs the command detached; a unit that runs already is refused, as systemd does
        unit=
        while [ $# -gt 0 ]; do
        	case $1 in --unit=*) unit=${1#--unit=}; shift ;; --*) shift ;; *) break ;; esac
        done
        echo "$unit $*" >>"$QFW_SYSTEMD/calls"
        if [ -n "$unit" ] && pid=$(cat "$QFW_SYSTEMD/$unit.pid" 2>/dev/null) && kill -0 "$pid" 2>/dev/null; then
        	echo "Failed to start transient service unit: Unit $unit.service already exists." >&2
        	exit 1
        fi
        setsid "$@" </dev/null >/dev/null 2>&1 &
        echo $! >"$QFW_SYSTEMD/$unit.pid"
        """;

    private readonly LabTopology _lab;
    private readonly string _dir;
    private readonly string _bin;
    private readonly object _eventLock = new();

    public AgentLab(LabTopology lab)
    {
        _lab = lab;
        _dir = Path.Combine(lab.WorkDir, "agent-" + Guid.NewGuid().ToString("N")[..8]);
        _bin = Path.Combine(_dir, "bin");
        Directory.CreateDirectory(_bin);
        WriteExecutable(Path.Combine(_bin, "qubesdb-read"), QubesDbRead);
        WriteExecutable(Path.Combine(_bin, "qubesdb-multiread"), QubesDbMultiread);
        WriteExecutable(Path.Combine(_bin, "qubesdb-watch"), QubesDbWatch);
        WriteExecutable(Path.Combine(_bin, "systemd-run"), SystemdRun);
        AgentFile = Path.Combine(_dir, "qubesfw-agent");
        WriteExecutable(AgentFile, AgentScript.Text);
    }

    /// <summary>The agent as installed (the module's text, mode 0755).</summary>
    public string AgentFile { get; }

    private string QubeDir(string qube) => Path.Combine(_dir, "q", qube);

    public string RunDir(string qube) => Path.Combine(QubeDir(qube), "run");

    private string Db(string qube) => Path.Combine(QubeDir(qube), "qdb", "db");

    private string Events(string qube) => Path.Combine(QubeDir(qube), "qdb", "events");

    /// <summary>Seconds the qubesdb-watch stand-in takes to register its watch (null: at once).</summary>
    public string? WatchDelay { get; set; }

    /// <summary>The environment a hook runs with in this lab: the stand-ins first on PATH, the qube's QubesDB and /run folders.</summary>
    public Dictionary<string, string> Env(string qube)
    {
        var env = new Dictionary<string, string>
        {
            ["PATH"] = _bin + ":" + LabProcess.ChildPath,
            ["QFW_QDB"] = Path.Combine(QubeDir(qube), "qdb"),
            ["QFW_SYSTEMD"] = Path.Combine(QubeDir(qube), "systemd"),
            ["QUBESFW_RUN_DIR"] = RunDir(qube),
        };
        if (WatchDelay is { } delay) env["QFW_WATCH_DELAY"] = delay;
        return env;
    }

    /// <summary>A qube's QubesDB as qubesd creates it at start: /name, and its vm-config.* features.</summary>
    public void CreateQubesDb(string qube, IEnumerable<KeyValuePair<string, string>>? features = null)
    {
        var dir = QubeDir(qube);
        if (Directory.Exists(Path.Combine(dir, "qdb"))) Directory.Delete(Path.Combine(dir, "qdb"), recursive: true);
        Directory.CreateDirectory(Path.Combine(Db(qube), "vm-config"));
        Directory.CreateDirectory(Path.Combine(dir, "systemd"));
        File.WriteAllText(Path.Combine(Db(qube), "name"), qube);
        File.WriteAllText(Events(qube), "");
        foreach (var (name, value) in features ?? [])
            File.WriteAllText(KeyFile(qube, name), value);
    }

    private string KeyFile(string qube, string feature)
    {
        Assert.StartsWith(AgentFeatures.VmConfigPrefix, feature, StringComparison.Ordinal);
        var name = feature[AgentFeatures.VmConfigPrefix.Length..];
        Assert.Matches("^[a-z][a-z0-9._-]{0,51}$", name);
        return Path.Combine(Db(qube), "vm-config", name);
    }

    /// <summary>What qubesd does on <c>feature.Set</c> of <c>vm-config.*</c> for a running qube: write the key, fire the watches.</summary>
    public void SetFeature(string qube, string feature, string value)
    {
        var file = KeyFile(qube, feature);
        File.WriteAllText(file + ".tmp", value);
        File.Move(file + ".tmp", file, overwrite: true);
        Fire(qube, "/vm-config/" + Path.GetFileName(file));
    }

    /// <summary>What qubesd does on <c>feature.Remove</c>: remove the key, fire the watches.</summary>
    public void RemoveFeature(string qube, string feature)
    {
        var file = KeyFile(qube, feature);
        File.Delete(file);
        Fire(qube, "/vm-config/" + Path.GetFileName(file));
    }

    public void Apply(IEnumerable<AgentFeatureChange> changes)
    {
        foreach (var c in changes)
        {
            if (c.IsRemove) RemoveFeature(c.VMName, c.Feature);
            else SetFeature(c.VMName, c.Feature, c.Value!);
        }
    }

    private void Fire(string qube, string path)
    {
        lock (_eventLock) File.AppendAllText(Events(qube), path + "\n");
    }

    /// <summary>The keys in a qube's QubesDB stand-in (feature name -> value).</summary>
    public Dictionary<string, string> Keys(string qube) =>
        Directory.GetFiles(Path.Combine(Db(qube), "vm-config")).Where(f => !f.EndsWith(".tmp", StringComparison.Ordinal))
            .ToDictionary(f => AgentFeatures.VmConfigPrefix + Path.GetFileName(f), File.ReadAllText, StringComparer.Ordinal);

    /// <summary>The hook as a network qube's qubes-firewall runs it (or rc.local.d elsewhere): with this lab's environment, timed.</summary>
    public (LabExecResult Result, TimeSpan Took) RunHook(string qube)
    {
        var hook = Path.Combine(QubeDir(qube), "hook");
        WriteExecutable(hook, HookFile(qube));
        var sw = Stopwatch.StartNew();
        var r = _lab.Exec(qube, [hook], stdin: null, timeout: TimeSpan.FromSeconds(10));
        return (r, sw.Elapsed);
    }

    /// <summary>The module's hook text with this lab's agent path, after the lines that give it the lab's environment.</summary>
    public string HookFile(string qube)
    {
        var sb = new StringBuilder("#!/bin/sh\n");
        foreach (var (k, v) in Env(qube)) sb.Append("export ").Append(k).Append("='").Append(v).Append("'\n");
        var hook = AgentScript.HookText(firewallHook: true, AgentFile);
        sb.Append(hook[(hook.IndexOf('\n') + 1)..]);
        return sb.ToString();
    }

    /// <summary>Puts the hook into the qube's /rw/config stand-in where Qubes runs it at start, so that <see cref="LabTopology.Reboot"/> starts the agent.</summary>
    public void InstallHook(string qube, bool networkQube)
    {
        if (networkQube) _lab.WriteRwConfig(qube, "qubes-firewall.d/90-qubesfw-agent", HookFile(qube), executable: true);
        else _lab.WriteRwConfig(qube, "rc.local.d/90-qubesfw-agent.rc", HookFile(qube), executable: true);
    }

    /// <summary>The agent's status line, or null before it wrote one.</summary>
    public string? Status(string qube)
    {
        var file = Path.Combine(RunDir(qube), "status");
        return File.Exists(file) ? File.ReadAllText(file).TrimEnd('\n') : null;
    }

    /// <summary>Waits until the status line starts with <paramref name="prefix"/>; returns the time it took (throws with the last status after <paramref name="limit"/>).</summary>
    public TimeSpan WaitStatus(string qube, string prefix, TimeSpan? limit = null)
    {
        var sw = Stopwatch.StartNew();
        var max = limit ?? TimeSpan.FromSeconds(10);
        while (true)
        {
            var s = Status(qube);
            if (s is not null && s.StartsWith(prefix, StringComparison.Ordinal)) return sw.Elapsed;
            if (sw.Elapsed > max) throw new TimeoutException($"{qube}: status '{s}' after {sw.ElapsedMilliseconds} ms, waiting for '{prefix}'");
            Thread.Sleep(5);
        }
    }

    /// <summary>Waits for <c>state=applied gen=G</c> (G from the qube's derived keys, <c>none</c> for an empty set).</summary>
    public TimeSpan WaitApplied(string qube, string? generation, TimeSpan? limit = null) =>
        WaitStatus(qube, $"state=applied gen={generation ?? "none"} ", limit);

    /// <summary>The pid of the running agent of a qube (null when none runs).</summary>
    public int? AgentPid(string qube)
    {
        var file = Path.Combine(RunDir(qube), "agent.pid");
        if (!File.Exists(file) || !int.TryParse(File.ReadAllText(file).Trim(), out var pid)) return null;
        return Directory.Exists($"/proc/{pid}") ? pid : null;
    }

    /// <summary>Stops a qube's agent (its whole process group: the watch stand-in goes with it) and forgets its /run state, as a qube's shutdown does.</summary>
    public void Stop(string qube)
    {
        if (AgentPid(qube) is { } pid)
        {
            kill(-pid, 9);
            kill(pid, 9);
            for (var i = 0; i < 200 && Directory.Exists($"/proc/{pid}") && !IsZombie(pid); i++) Thread.Sleep(5);
        }
        if (Directory.Exists(RunDir(qube))) Directory.Delete(RunDir(qube), recursive: true);
    }

    private static bool IsZombie(int pid)
    {
        try
        {
            var stat = File.ReadAllText($"/proc/{pid}/stat");
            return stat[(stat.LastIndexOf(')') + 2)] == 'Z';
        }
        catch (IOException)
        {
            return true;
        }
    }

    /// <summary>The systemd-run calls the hook made in a qube (unit, command).</summary>
    public IReadOnlyList<string> SystemdCalls(string qube)
    {
        var file = Path.Combine(QubeDir(qube), "systemd", "calls");
        return File.Exists(file) ? File.ReadAllLines(file) : [];
    }

    [DllImport("libc", SetLastError = true)]
    private static extern int kill(int pid, int sig);

    private static void WriteExecutable(string path, string text)
    {
        File.WriteAllText(path, text.EndsWith('\n') ? text : text + "\n", new UTF8Encoding(false));
        File.SetUnixFileMode(path, (UnixFileMode)0b111_101_101);
    }

    public void Dispose()
    {
        var q = Path.Combine(_dir, "q");
        if (!Directory.Exists(q)) return;
        foreach (var qube in Directory.GetDirectories(q).Select(Path.GetFileName))
            Stop(qube!);
    }
}

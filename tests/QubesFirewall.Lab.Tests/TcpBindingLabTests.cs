using QubesFirewall.Engine.Deployment;
using System.Diagnostics;
using System.Globalization;
using System.Text;
using System.Text.RegularExpressions;
using QubesFirewall.Engine.Backends;
using QubesFirewall.Engine.Formats;
using QubesFirewall.Engine.Model;
using QubesFirewall.Engine.Persistence;
using QubesFirewall.Engine.Planning;
using QubesFirewall.Lab.Tests.Lab;
using QubesFirewall.Tests.Shared;
using Xunit.Abstractions;

namespace QubesFirewall.Lab.Tests;

/// <summary>
/// qubes.ConnectTCP bindings proven with real sockets: the engine's plan applied to an offline root shaped like the
/// lab, the client's rc.local and listener script (the very text the engine wrote) run with bash in its namespace,
/// and a stand-in for qrexec between the namespaces.
/// <para>The stand-in <c>qrexec-client-vm</c> (one per client qube, first on the PATH its scripts see) asks "dom0" by
/// reading a route table the test computes from the generated dom0 policy, with the stock default policy next to it,
/// through the test-side model of qrexec's parser (first match across the files in name order); an allowed call is
/// connected to 127.0.0.1:PORT inside the target's namespace (<c>ip netns exec TARGET socat - TCP4:127.0.0.1:PORT</c>),
/// which is what qubes.ConnectTCP (qrexec's built-in /dev/tcp/127.0.0.1) does in the target; a refused one exits 126,
/// as qrexec-client-vm does. So the lab shows the client's local port reaching the service only where the policy the
/// engine wrote allows it.</para>
/// <para>systemd does not run in the lab. The listener script falls back, where <c>/run/systemd/system</c> is absent
/// (sd_booted), to one socat listener per port on 127.0.0.1; that fallback is part of the generated text, so the lab
/// runs the engine's own rc.local and script unchanged. Each run is wrapped in a private mount namespace that gives the
/// qube a /run of its own for the module (/run/qubesfirewall bound to a per-qube folder) and hides the host's
/// /run/systemd, so the script behaves the same on a host that runs systemd (CI) and never touches the host's units.
/// The systemd path itself is proven by running the generated units' ExecStart through a tiny test-side socket
/// activator (socat listening on the unit's ListenStream, Accept=true as fork, the connection as the command's
/// standard input and output), the units read from the heredocs of the rc.local block.</para>
/// </summary>
[Collection(LabCollection.Name)]
public sealed class TcpBindingLabTests : IDisposable
{
    private const string RcLocal = "/rw/config/rc.local";

    private readonly LabTopology _lab;
    private readonly ITestOutputHelper _output;
    private readonly string _dir;
    private readonly OfflineRoot _backend;
    private readonly List<Process> _activators = [];

    public TcpBindingLabTests(LabTopology lab, ITestOutputHelper output)
    {
        _lab = lab;
        _output = output;
        _lab.Reset();
        _dir = Path.Combine(lab.WorkDir, "tcp-" + Guid.NewGuid().ToString("N")[..8]);
        var root = Path.Combine(_dir, "qubes-root");
        Directory.CreateDirectory(root);
        File.WriteAllText(Path.Combine(root, "qubes.xml"), PortForwardLab.QubesXmlFor(lab.Options));
        _backend = new OfflineRoot(root);
        // dom0's stock policy next to the module's file: the sample root's stand-in of 90-default.policy
        _backend.WriteDom0File("/etc/qubes/policy.d/90-default.policy", File.ReadAllText(SampleDefaultPolicy()), QrexecPolicy.FileMode);
        foreach (var q in lab.Qubes) WriteStandIn(q.Name);
        Directory.CreateDirectory(Path.Combine(_dir, "routes"));
    }

    public void Dispose()
    {
        foreach (var p in _activators) LabProcess.KillGroup(p);
        foreach (var pidFile in Directory.Exists(_dir) ? Directory.EnumerateFiles(_dir, "*.pid", SearchOption.AllDirectories) : [])
        {
            if (int.TryParse(File.ReadAllText(pidFile).Trim(), CultureInfo.InvariantCulture, out var pid) && IsListener(pid))
                LabProcess.KillPid(pid);
        }
        try { Directory.Delete("/run/qubesfirewall"); } catch (IOException) { } catch (UnauthorizedAccessException) { }
        _backend.Dispose();
    }

    // ------------------------------------------------------------------ the test

    [Fact]
    public void The_client_s_local_port_reaches_the_service_only_where_the_generated_policy_allows_it()
    {
        using var service = _lab.StartServer("work", 444, bind: "127.0.0.1");
        using var other = _lab.StartServer("work", 555, bind: "127.0.0.1");
        Assert.False(Local("untrusted", 10444).Connected); // nothing listens in untrusted yet

        // Add: the feature, untrusted's rc.local with the managed block, its listener script, dom0's policy
        var binding = TcpBinding.Create("untrusted", "work", 444, 10444, permanent: true);
        var plan = TcpBindingPlanner.PlanAdd(_backend, binding, DeploymentOptions.For(_backend));
        Assert.Equal([DeploymentStepKind.SetFeature, DeploymentStepKind.WriteFile, DeploymentStepKind.RunScript, DeploymentStepKind.WriteDom0File], plan.Steps.Select(s => s.Kind));
        Assert.Null(TcpBindingPlanner.Apply(_backend, plan).Failure);
        var rcLocal = _backend.ReadQubeFile("untrusted", RcLocal)!;
        Assert.Equal(plan.Steps[1].Content, rcLocal);
        _lab.WriteRwConfig("untrusted", "rc.local", rcLocal, executable: true);
        UpdateRoutes();

        // 1. the systemd way: the generated units, run by a test-side socket activator
        var block = ManagedBlock.Extract(rcLocal)!;
        var units = Units(block);
        var socket = UnitFile.Parse(units["qubesfirewall-tcp-10444.socket"]);
        var serviceUnit = UnitFile.Parse(units["qubesfirewall-tcp-10444@.service"]);
        StartActivator("untrusted", socket, serviceUnit);
        var viaUnits = Local("untrusted", 10444);
        Assert.True(viaUnits.Connected, $"through the units: {viaUnits}");
        Assert.Equal(("work", "127.0.0.1"), (viaUnits.ServerNode, viaUnits.PeerAddress));
        StopActivators();
        AssertNotListening("untrusted", 10444);

        // 2. the listener script of the run step, as the engine gave it (no systemd here: the socat fallback)
        RunInQube("untrusted", plan.Steps[2].Script!).EnsureSuccess("listener script in untrusted");
        var r = Local("untrusted", 10444);
        Assert.True(r.Connected, $"through the fallback listener: {r}");
        Assert.Equal(("work", "127.0.0.1"), (r.ServerNode, r.PeerAddress));
        Assert.False(Local("untrusted", 10555).Connected); // no listener on another local port
        Assert.False(Local("untrusted", 444).Connected); // nor on the target's port itself

        // the policy is what decides: untrusted's call for another port, and any call of another qube, are refused
        Assert.Equal(126, Call("untrusted", 555).ExitCode);
        Assert.Equal(126, Call("personal", 444).ExitCode);
        Assert.Equal(126, Call("work", 444).ExitCode);
        var direct = Call("untrusted", 444);
        Assert.Equal(0, direct.ExitCode);
        Assert.StartsWith("work 127.0.0.1", direct.StdOut);

        // 3. idempotent: running it again keeps the same listener
        var pid = ListenerPid("untrusted", 10444);
        RunInQube("untrusted", plan.Steps[2].Script!).EnsureSuccess("listener script again");
        Assert.Equal(pid, ListenerPid("untrusted", 10444));
        Assert.True(Local("untrusted", 10444).Connected);

        // 4. a reboot: /run is empty again, Qubes runs /rw/config/rc.local, the listener comes back
        KillListeners("untrusted");
        Assert.False(Local("untrusted", 10444).Connected);
        RunPersistedInQube("untrusted", "rc.local").EnsureSuccess("rc.local in untrusted");
        var afterBoot = Local("untrusted", 10444);
        Assert.True(afterBoot.Connected, $"after the reboot: {afterBoot}");
        Assert.NotEqual(pid, ListenerPid("untrusted", 10444));

        // 5. Remove: the policy line goes first, so the port is closed at once, even with the listener still up
        var remove = TcpBindingPlanner.PlanRemove(_backend, "untrusted", "work", 444, DeploymentOptions.For(_backend));
        Assert.Equal([DeploymentStepKind.RemoveDom0File, DeploymentStepKind.WriteFile, DeploymentStepKind.RunScript, DeploymentStepKind.RemoveFeature], remove.Steps.Select(s => s.Kind));
        Assert.Null(TcpBindingPlanner.Apply(_backend, remove).Failure);
        UpdateRoutes();
        Assert.Null(_backend.ReadDom0File(QrexecPolicy.FilePath));
        Assert.NotNull(ListenerPid("untrusted", 10444));
        Assert.False(Local("untrusted", 10444).Connected);
        Assert.Equal(126, Call("untrusted", 444).ExitCode);

        // then the listener and the block go
        RunInQube("untrusted", remove.Steps[2].Script!).EnsureSuccess("cleanup script in untrusted");
        Assert.Null(ListenerPid("untrusted", 10444));
        AssertNotListening("untrusted", 10444);
        var rcAfter = _backend.ReadQubeFile("untrusted", RcLocal)!;
        Assert.Equal("#!/bin/sh\n", rcAfter);
        _lab.WriteRwConfig("untrusted", "rc.local", rcAfter, executable: true);
        RunPersistedInQube("untrusted", "rc.local").EnsureSuccess("rc.local without bindings");
        Assert.False(IsListening("untrusted", 10444));
        _output.WriteLine($"{plan.Describe()}\n{remove.Describe()}");
    }

    [Fact]
    public void Two_clients_and_a_changed_local_port_keep_to_their_own_listeners()
    {
        using var service = _lab.StartServer("work", 8080, bind: "127.0.0.1");
        using var ssh = _lab.StartServer("personal", 22, bind: "127.0.0.1");

        Apply(TcpBindingPlanner.PlanAdd(_backend, TcpBinding.Create("untrusted", "work", 8080, 18080, true), DeploymentOptions.For(_backend)));
        Apply(TcpBindingPlanner.PlanAdd(_backend, TcpBinding.Create("untrusted", "personal", 22, 2222, true), DeploymentOptions.For(_backend)));
        Apply(TcpBindingPlanner.PlanAdd(_backend, TcpBinding.Create("vpn-app", "work", 8080, permanent: true), DeploymentOptions.For(_backend)));
        Assert.Equal("work", Local("untrusted", 18080).ServerNode);
        Assert.Equal("personal", Local("untrusted", 2222).ServerNode);
        Assert.Equal("work", Local("vpn-app", 8080).ServerNode); // vpn-app's local 8080 is its binding's, not a network path
        Assert.Equal(126, Call("vpn-app", 22).ExitCode); // vpn-app was not given personal's port

        // moving untrusted's web binding to another local port stops the old listener and leaves ssh alone
        var sshPid = ListenerPid("untrusted", 2222);
        Apply(TcpBindingPlanner.PlanAdd(_backend, TcpBinding.Create("untrusted", "work", 8080, 28080, true), DeploymentOptions.For(_backend)));
        AssertNotListening("untrusted", 18080);
        Assert.Equal("work", Local("untrusted", 28080).ServerNode);
        Assert.Equal(sshPid, ListenerPid("untrusted", 2222));

        // the rc.local of a reboot gives the same listeners
        KillListeners("untrusted");
        RunPersistedInQube("untrusted", "rc.local").EnsureSuccess("rc.local");
        Assert.Equal("work", Local("untrusted", 28080).ServerNode);
        Assert.Equal("personal", Local("untrusted", 2222).ServerNode);
        Assert.False(IsListening("untrusted", 18080));
    }

    // ------------------------------------------------------------------ engine to lab

    /// <summary>Applies a plan offline, copies the files it wrote into the lab, runs its script, re-reads the policy.</summary>
    private void Apply(TcpBindingPlan plan)
    {
        Assert.Null(TcpBindingPlanner.Apply(_backend, plan).Failure);
        foreach (var step in plan.Steps)
        {
            if (step.Kind == DeploymentStepKind.WriteFile)
                _lab.WriteRwConfig(step.VMName, PortForwardLab.RelativeToRwConfig(step.Path!), _backend.ReadQubeFile(step.VMName, step.Path!)!, executable: true);
        }
        UpdateRoutes();
        foreach (var step in plan.Steps.Where(s => s.Kind == DeploymentStepKind.RunScript))
            RunInQube(step.VMName, step.Script!).EnsureSuccess($"listener script in {step.VMName}");
    }

    /// <summary>
    /// "dom0": evaluates every call the lab's qubes could make (each qube, @default, qubes.ConnectTCP+PORT for the ports
    /// the tests use) against the policy directory of the offline root with the qrexec model, and writes the decisions
    /// where the stand-ins read them: routes/SOURCE/@default/qubes.ConnectTCP+PORT holds the target's namespace.
    /// </summary>
    private void UpdateRoutes()
    {
        var routes = Path.Combine(_dir, "routes");
        if (Directory.Exists(routes)) Directory.Delete(routes, recursive: true);
        Directory.CreateDirectory(routes);
        var names = _backend.ListDom0Files(QrexecPolicy.Directory);
        var rules = QrexecPolicyModel.Load(names.Select(n => (n, File.ReadAllText(Dom0Files.Map(_backend.Dom0Root, QrexecPolicy.Directory + "/" + n)))));
        var domains = _lab.Qubes.ToDictionary(q => q.Name, _ => new QrexecPolicyModel.Domain("AppVM", []), StringComparer.Ordinal);
        domains["dom0"] = new QrexecPolicyModel.Domain("AdminVM", []);
        foreach (var source in _lab.Qubes.Select(q => q.Name))
        {
            foreach (var port in new[] { 22, 444, 555, 8080 })
            {
                var result = QrexecPolicyModel.Evaluate(rules, "qubes.ConnectTCP", "+" + port.ToString(CultureInfo.InvariantCulture), source, "@default", domains);
                if (result.Outcome != "allow") continue;
                var file = Path.Combine(routes, source, "@default", "qubes.ConnectTCP+" + port.ToString(CultureInfo.InvariantCulture));
                Directory.CreateDirectory(Path.GetDirectoryName(file)!);
                File.WriteAllText(file, _lab.Namespace(result.Target!) + "\n");
            }
        }
    }

    // ------------------------------------------------------------------ qrexec stand-in and the qube's own /run

    private void WriteStandIn(string qube)
    {
        var bin = Path.Combine(_dir, "bin", qube);
        Directory.CreateDirectory(bin);
        Directory.CreateDirectory(Path.Combine(_dir, "run", qube));
        var script = $$"""
            #!/bin/bash
            # Stand-in for qrexec-client-vm in the lab qube {{qube}}: dom0's decision is the route the test computed from the
            # generated policy; an allowed qubes.ConnectTCP+PORT call is connected to 127.0.0.1:PORT in the target's namespace.
            target="$1"; service="$2"
            [ -n "$target" ] && [ "$target" != '$default' ] || target=@default
            route='{{_dir}}/routes/{{qube}}'/"$target/$service"
            echo "{{qube}} $target $service $([ -f "$route" ] && echo allowed || echo refused)" >> '{{_dir}}/calls.log'
            if [ ! -f "$route" ]; then echo "Request refused" >&2; exit 126; fi
            read -r ns < "$route"
            case "$service" in qubes.ConnectTCP+[0-9]*) port="${service#qubes.ConnectTCP+}" ;; *) exit 126 ;; esac
            exec ip netns exec "$ns" socat -t5 - "TCP4:127.0.0.1:$port"
            """;
        var exe = Path.Combine(bin, "qrexec-client-vm");
        File.WriteAllText(exe, script.Replace("\r", "", StringComparison.Ordinal) + "\n");
        File.SetUnixFileMode(exe, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
    }

    // Run as in the qube: a private mount namespace where /run/qubesfirewall is the qube's own folder and the host's
    // /run/systemd (if any) is hidden, PATH with the qube's qrexec-client-vm first.
    private const string Wrapper = """
        set -e
        if [ -d /run/systemd ]; then mount -t tmpfs -o size=64k tmpfs /run/systemd; fi
        mkdir -p /run/qubesfirewall
        mount --bind "$QFW_LAB_RUN" /run/qubesfirewall
        cd "$QFW_LAB_RW_CONFIG"
        exec bash "$1"
        """;

    private LabExecResult RunFileInQube(string qube, string file) =>
        _lab.Exec(qube, ["unshare", "--mount", "--propagation", "private", "bash", "-c", Wrapper, "qfw-lab-run", file], stdin: null,
            timeout: TimeSpan.FromSeconds(30),
            env: new Dictionary<string, string>
            {
                ["PATH"] = Path.Combine(_dir, "bin", qube) + ":" + LabProcess.ChildPath,
                ["QFW_LAB_RUN"] = Path.Combine(_dir, "run", qube),
                [LabTopology.RwConfigEnv] = _lab.RwConfigDir(qube),
            });

    private LabExecResult RunInQube(string qube, string script)
    {
        var file = Path.Combine(_dir, $"run-{qube}-{Guid.NewGuid():N}.sh");
        File.WriteAllText(file, script, new UTF8Encoding(false));
        try
        {
            return RunFileInQube(qube, file);
        }
        finally
        {
            File.Delete(file);
        }
    }

    private LabExecResult RunPersistedInQube(string qube, string relative)
    {
        Assert.True(_lab.IsRwConfigExecutable(qube, relative), $"{relative} of {qube} must be executable for Qubes to run it");
        return RunFileInQube(qube, Path.Combine(_lab.RwConfigDir(qube), relative));
    }

    /// <summary>A qrexec call made by hand in the qube: <c>qrexec-client-vm @default qubes.ConnectTCP+PORT</c> (stdin closed).</summary>
    private LabExecResult Call(string qube, int port) =>
        _lab.Exec(qube, ["qrexec-client-vm", "@default", "qubes.ConnectTCP+" + port.ToString(CultureInfo.InvariantCulture)], stdin: "", timeout: TimeSpan.FromSeconds(10),
            env: new Dictionary<string, string> { ["PATH"] = Path.Combine(_dir, "bin", qube) + ":" + LabProcess.ChildPath });

    private LabConnectResult Local(string qube, int port) => _lab.Connect(qube, "127.0.0.1", port, timeout: TimeSpan.FromSeconds(3));

    private string? ListenerPid(string qube, int port)
    {
        var file = Path.Combine(_dir, "run", qube, "connect-tcp", port.ToString(CultureInfo.InvariantCulture) + ".pid");
        return File.Exists(file) ? File.ReadAllText(file).Trim() : null;
    }

    private bool IsListening(string qube, int port)
    {
        var tcp = _lab.Exec(qube, "cat", "/proc/net/tcp").EnsureSuccess().StdOut;
        return Regex.IsMatch(tcp, $@" 0100007F:{port:X4} 00000000:0000 0A ");
    }

    /// <summary>What a reboot does to the listeners: the processes end and the qube's /run is empty.</summary>
    private void KillListeners(string qube)
    {
        var dir = Path.Combine(_dir, "run", qube, "connect-tcp");
        if (!Directory.Exists(dir)) return;
        var ports = new List<int>();
        foreach (var pidFile in Directory.EnumerateFiles(dir, "*.pid"))
        {
            ports.Add(int.Parse(Path.GetFileNameWithoutExtension(pidFile), CultureInfo.InvariantCulture));
            if (int.TryParse(File.ReadAllText(pidFile).Trim(), CultureInfo.InvariantCulture, out var pid) && IsListener(pid))
                LabProcess.KillPid(pid);
        }
        Directory.Delete(dir, recursive: true);
        foreach (var port in ports) AssertNotListening(qube, port);
    }

    /// <summary>A listener that was just stopped may take a moment to close its socket.</summary>
    private void AssertNotListening(string qube, int port)
    {
        var deadline = DateTime.UtcNow.AddSeconds(3);
        while (IsListening(qube, port))
        {
            Assert.True(DateTime.UtcNow < deadline, $"{qube} still listens on 127.0.0.1:{port}");
            Thread.Sleep(20);
        }
    }

    private static bool IsListener(int pid) =>
        LabProcess.CommOf(pid) == "socat" && File.Exists($"/proc/{pid}/cmdline") &&
        File.ReadAllText($"/proc/{pid}/cmdline").Contains("qubes.ConnectTCP", StringComparison.Ordinal);

    // ------------------------------------------------------------------ the systemd path, by a test-side socket activator

    /// <summary>The unit files an rc.local block writes (the heredocs of its <c>qfw_unit</c> calls).</summary>
    private static Dictionary<string, string> Units(string block)
    {
        var result = new Dictionary<string, string>(StringComparer.Ordinal);
        var lines = block.Split('\n');
        for (var i = 0; i < lines.Length; i++)
        {
            var m = Regex.Match(lines[i], @"^\s*qfw_unit '([^']+)' <<'QUBESFW_UNIT'");
            if (!m.Success) continue;
            var body = new StringBuilder();
            for (i++; lines[i] != "QUBESFW_UNIT"; i++) body.Append(lines[i]).Append('\n');
            result[m.Groups[1].Value] = body.ToString();
        }
        return result;
    }

    /// <summary>
    /// Does what systemd does with the socket unit and its template service: listens on ListenStream, and with
    /// Accept=true runs one ExecStart per connection with the connection as standard input and output
    /// (socat's fork + EXEC). The command's path is looked up in the qube's stand-in folder (there is no
    /// /usr/bin/qrexec-client-vm on the host): only its file name is taken from the unit.
    /// </summary>
    private void StartActivator(string qube, IReadOnlyList<UnitFile.Entry> socket, IReadOnlyList<UnitFile.Entry> service)
    {
        Assert.Equal("true", UnitFile.Single(socket, "Socket", "Accept"));
        Assert.Equal("socket", UnitFile.Single(service, "Service", "StandardInput"));
        Assert.Equal("socket", UnitFile.Single(service, "Service", "StandardOutput"));
        var listen = UnitFile.Single(socket, "Socket", "ListenStream");
        var colon = listen.LastIndexOf(':');
        var (address, port) = (listen[..colon], int.Parse(listen[(colon + 1)..], CultureInfo.InvariantCulture));
        var argv = UnitFile.Single(service, "Service", "ExecStart").Split(' ', StringSplitOptions.RemoveEmptyEntries);
        Assert.Equal("/usr/bin/qrexec-client-vm", argv[0]);
        var command = Path.Combine(_dir, "bin", qube, Path.GetFileName(argv[0])) + " " + string.Join(' ', argv[1..]);
        var process = LabProcess.Start(["ip", "netns", "exec", _lab.Namespace(qube), "socat", $"TCP4-LISTEN:{port},bind={address},reuseaddr,fork", "EXEC:" + command],
            redirectStdin: true);
        _activators.Add(process);
        var deadline = DateTime.UtcNow.AddSeconds(5);
        while (!IsListening(qube, port))
        {
            if (process.HasExited) Assert.Fail("the socket activator exited: " + process.StandardError.ReadToEnd());
            Assert.True(DateTime.UtcNow < deadline, "the socket activator does not listen");
            Thread.Sleep(20);
        }
    }

    private void StopActivators()
    {
        foreach (var p in _activators) LabProcess.KillGroup(p);
        _activators.Clear();
    }

    private static string SampleDefaultPolicy()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
            if (File.Exists(Path.Combine(dir.FullName, "QubesFirewall.slnx")))
                return Path.Combine(dir.FullName, "examples", "qubes-root", "qubesfirewall-state", "dom0", "etc", "qubes", "policy.d", "90-default.policy");
        throw new InvalidOperationException("repository root not found");
    }
}

using QubesFirewall.Engine.Agent;
using QubesFirewall.Engine.Backends;
using QubesFirewall.Engine.Model;
using QubesFirewall.Engine.Planning;
using QubesFirewall.TestQubesd;
using QubesFirewall.Tests.Shared;
using Xunit.Abstractions;

namespace QubesFirewall.PowerShell.Tests;

/// <summary>
/// One forward through sys-net and the disposable sys-firewall on the live backend (stand-in qubesd, stand-in qvm-run):
/// with the agent recorded on the qubes, Add-/Remove-QubePortForward are feature calls only, with no write into default-dvm
/// and no -Force; the Admin API calls and qvm-run processes of both deliveries are counted side by side.
/// </summary>
[System.Runtime.Versioning.UnsupportedOSPlatform("windows")]
public sealed class AgentDeliveryCmdletTests : IDisposable
{
    private static readonly string OriginalPath = Environment.GetEnvironmentVariable("PATH") ?? "/usr/bin:/bin";
    private static readonly string[] Qubes = ["sys-net", "sys-firewall", "work"];

    private readonly ITestOutputHelper _output;
    private readonly SampleRootCopy _root = new();
    private readonly string _dir = Path.Combine(Path.GetTempPath(), "qfw-agent-" + Guid.NewGuid().ToString("N")[..10]);
    private FakeQubesd? _server;
    private StandInQvmRun? _qvmRun;

    public AgentDeliveryCmdletTests(ITestOutputHelper output)
    {
        _output = output;
        Directory.CreateDirectory(_dir);
    }

    private void Start(bool withAgent)
    {
        using (var backend = new OfflineRoot(_root.Path))
        {
            foreach (var q in Qubes)
            {
                if (withAgent) backend.SetFeature(q, AgentScript.VersionFeature, AgentScript.Version);
                else backend.RemoveFeature(q, AgentScript.VersionFeature);
            }
        }
        _server = new FakeQubesd(_root.Path, Path.Combine(_dir, "qubesd.sock"));
        _qvmRun = new StandInQvmRun(Path.Combine(_dir, "qvm-run"), powerStates: Path.Combine(_root.Path, "qubesfirewall-state"));
        _qvmRun.FakeNft();
    }

    public void Dispose()
    {
        _server?.Dispose();
        try { Directory.Delete(_dir, recursive: true); } catch (IOException) { }
        _root.Dispose();
    }

    private PsRun Run(string script) => PowerShellHost.Run(script, environment: new Dictionary<string, string>
    {
        ["QUBESFW_ROOT"] = "",
        ["QUBESFW_QUBESD_SOCKET"] = _server!.SocketPath,
        ["PATH"] = _qvmRun!.BinFolder + ":" + OriginalPath,
    });

    private (int Calls, int Writes, int QvmRun) Count(Func<PsRun> run, string what)
    {
        _server!.ClearCalls();
        var qvmBefore = _qvmRun!.Calls.Count;
        var result = run();
        var calls = _server.Calls;
        var writes = calls.Count(c => c.Method is "admin.vm.feature.Set" or "admin.vm.feature.Remove");
        var qvm = _qvmRun.Calls.Count - qvmBefore;
        _output.WriteLine($"{what}: {calls.Count} Admin API calls ({writes} feature.Set/Remove), {qvm} qvm-run processes; errors: {result.Errors.Count}");
        _output.WriteLine("  " + string.Join(", ", calls.GroupBy(c => c.Method).Select(g => $"{g.Key} x{g.Count()}")));
        return (calls.Count, writes, qvm);
    }

    [Fact]
    public void On_a_dom0_of_100_qubes_a_forward_reads_only_the_qubes_on_its_way()
    {
        // 83 plain AppVMs more (default netvm, no features): 100 qubes
        var xml = Path.Combine(_root.Path, "qubes.xml");
        var extra = string.Concat(Enumerable.Range(1, 83).Select(i =>
            $"    <domain id=\"domain-{200 + i}\" class=\"AppVM\">\n      <properties>\n        <property name=\"label\">red</property>\n" +
            $"        <property name=\"name\">extra-{i:D4}</property>\n        <property name=\"qid\">{200 + i}</property>\n" +
            "        <property name=\"template\">fedora-42-xfce</property>\n      </properties>\n      <features/>\n      <tags/>\n    </domain>\n"));
        File.WriteAllText(xml, File.ReadAllText(xml).Replace("  </domains>", extra + "  </domains>", StringComparison.Ordinal));
        Start(withAgent: true);
        Assert.Equal(100, Run("(Get-Qube).Count").Of<int>().Single());
        _server!.ClearCalls();

        Run("Add-QubePortForward work 8443 -AllowFrom 192.0.2.0/24 -NoWait -WarningAction SilentlyContinue").AssertNoErrors();
        // no call for a qube the forward does not reach: the list, then work, its two hops and the templates of their facts
        Assert.DoesNotContain(_server.Calls, c => c.Destination.StartsWith("extra-", StringComparison.Ordinal));
        Assert.Equal(["default-dvm", "dom0", "fedora-42-xfce", "sys-firewall", "sys-net", "work"], _server.Calls.Select(c => c.Destination).Distinct().Order(StringComparer.Ordinal));
        // 1 List, 5 feature.List and 4 property.GetAll to plan, 3 tag.List, 3 feature.List again just before each qube's first Set, 7 Sets
        Assert.Equal(23, _server.Calls.Count);
    }

    [Fact]
    public void WhatIf_shows_each_status_read_once_and_sends_nothing()
    {
        Start(withAgent: true);
        var run = Run("Add-QubePortForward work 443 -AllowFrom 192.168.1.0/24 -WhatIf");
        run.AssertNoErrors();
        // one status read per running qube on the way, shown once (not once per poll of the 5 s wait)
        var reads = run.Information.Where(i => i.StartsWith("What if: would send qvm-run", StringComparison.Ordinal) && i.Contains("/run/qubesfw/status", StringComparison.Ordinal)).ToList();
        Assert.Equal(3, reads.Count);
        foreach (var qube in Qubes) Assert.Single(reads, r => r.Contains($" -u root {qube} ", StringComparison.Ordinal));
        Assert.Equal(0, _server!.CountCalls("admin.vm.feature.Set"));
        Assert.Empty(_qvmRun!.Calls);
    }

    [Fact]
    public void Install_WhatIf_on_the_live_backend_shows_every_write_with_its_content_and_the_record_and_changes_nothing()
    {
        Start(withAgent: false);
        var run = Run("Install-QubeFirewallAgent -VMName work -WhatIf");
        run.AssertNoErrors();
        Assert.Empty(run.Of<QubeFirewallAgent>());
        var shown = run.Information.Where(i => i.StartsWith("What if: would send ", StringComparison.Ordinal)).ToList();
        // the plan's order: the agent, its hook, the start, the record
        Assert.Equal(4, shown.Count);
        Assert.Contains(" -u root work '", shown[0], StringComparison.Ordinal);
        Assert.Contains(AgentScript.AgentPath, shown[0], StringComparison.Ordinal);
        Assert.Contains("with standard input:\n" + AgentScript.Text.Split('\n')[0] + "\n", shown[0], StringComparison.Ordinal);
        Assert.Contains(AgentScript.RcLocalHookPath, shown[1], StringComparison.Ordinal);
        Assert.EndsWith("with standard input:\n" + AgentScript.HookText(firewallHook: false), shown[1], StringComparison.Ordinal);
        Assert.EndsWith($"with standard input:\n{AgentScript.AgentPath} hook\n", shown[2], StringComparison.Ordinal);
        Assert.Equal($"What if: would send admin.vm.feature.Set+{AgentScript.VersionFeature} dom0 name work with payload:\n{AgentScript.Version}", shown[3]);
        Assert.Equal(0, _server!.CountCalls("admin.vm.feature.Set"));
        Assert.Null(_qvmRun!.Read("work", AgentScript.AgentPath));
        Assert.Null(_qvmRun.Read("work", AgentScript.RcLocalHookPath));
    }

    [Fact]
    public void With_the_agent_a_forward_through_a_disposable_sys_firewall_is_feature_calls_only_without_Force()
    {
        Start(withAgent: true);
        var add = Count(() =>
        {
            var r = Run("Add-QubePortForward work 443 -AllowFrom 192.168.1.0/24 -NoWait -PassThru");
            r.AssertNoErrors();
            Assert.All(r.Of<PortForwardHopResult>(), h => Assert.Equal(PortForwardHopStatus.Sent, h.Status));
            return r;
        }, "add, through the agent");
        Assert.Equal(0, add.QvmRun);
        Assert.Equal(7, add.Writes); // the declaration, then one data key and gen for each of sys-net, sys-firewall, work
        Assert.All(_server!.Calls.Where(c => c.Method is "admin.vm.feature.Set" or "admin.vm.feature.Remove"),
            c => Assert.Contains(c.Destination, Qubes));
        Assert.Equal(0, _server.CountCalls("admin.vm.Start"));
        Assert.Null(_qvmRun!.Read("default-dvm", "/rw/config/qubes-firewall-user-script"));

        var remove = Count(() =>
        {
            var r = Run("Remove-QubePortForward work 443 -NoWait -Confirm:$false");
            r.AssertNoErrors();
            return r;
        }, "remove, through the agent");
        Assert.Equal(0, remove.QvmRun);
        Assert.Equal(7, remove.Writes);

        // without -NoWait: one status read per running qube per poll, and no confirmation from a qube without a running agent is an error
        var wait = Count(() =>
        {
            var r = Run("Add-QubePortForward work 443 -AllowFrom 192.168.1.0/24 -PassThru");
            var error = Assert.Single(r.Errors);
            Assert.StartsWith("PortForwardAgentUnconfirmed,", error.FullyQualifiedErrorId, StringComparison.Ordinal);
            var hops = r.Of<PortForwardHopResult>().ToDictionary(h => h.VMName, h => h.Status);
            Assert.Equal(PortForwardHopStatus.Unconfirmed, hops["sys-net"]);
            return r;
        }, "add, through the agent, asking the agents (none answers)");
        Assert.True(wait.QvmRun >= 2, $"{wait.QvmRun} status reads");

        // -Deep reads the status of each running qube with the same one command; without an agent there, it says so
        var deep = Run("Test-QubeFirewallAgent -VMName sys-net, default-dvm -Deep");
        deep.AssertNoErrors();
        var states = deep.Of<QubeFirewallAgent>().ToDictionary(a => a.VMName);
        Assert.Equal((AgentState.Current, "no status: the agent has not run since the qube started"), (states["sys-net"].State, states["sys-net"].Status));
        Assert.Equal((AgentState.Missing, (string?)null), (states["default-dvm"].State, states["default-dvm"].Status)); // halted: nothing read
        Assert.All(_qvmRun.Calls.TakeLast(wait.QvmRun), c => Assert.Equal(AgentDelivery.StatusCommand, System.Text.Encoding.UTF8.GetString(c.Stdin)));
    }

    [Fact]
    public void TimeoutSeconds_sets_how_long_the_agents_are_waited_for_and_is_refused_with_NoWait()
    {
        Start(withAgent: true); // no agent answers: the wait runs to its end
        var run = Run("""
            $watch = [System.Diagnostics.Stopwatch]::StartNew()
            Add-QubePortForward work 443 -AllowFrom 192.168.1.0/24 -TimeoutSeconds 1 -PassThru
            $watch.Elapsed.TotalSeconds
            """);
        var error = Assert.Single(run.Errors);
        Assert.StartsWith("PortForwardAgentUnconfirmed,", error.FullyQualifiedErrorId, StringComparison.Ordinal);
        Assert.All(run.Of<PortForwardHopResult>(), h => Assert.Equal(PortForwardHopStatus.Unconfirmed, h.Status));
        // waited its second, and gave up well before the default 5 s
        var seconds = run.Of<double>().Single();
        Assert.InRange(seconds, 1.0, 4.5);

        _server!.ClearCalls();
        var qvmBefore = _qvmRun!.Calls.Count;
        var both = Run("Remove-QubePortForward work 443 -NoWait -TimeoutSeconds 3 -Confirm:$false");
        var refused = Assert.Single(both.Errors);
        Assert.StartsWith("NoWaitWithTimeout,", refused.FullyQualifiedErrorId, StringComparison.Ordinal);
        Assert.Contains("-NoWait", refused.Exception.Message, StringComparison.Ordinal);
        Assert.Empty(_server.Calls); // refused before anything is read
        Assert.Equal(qvmBefore, _qvmRun.Calls.Count);
        using var offline = new OfflineRoot(_root.Path);
        Assert.Contains("qubesfirewall.forward.tcp.443", offline.GetInventory().Get("work").Features.Keys); // the forward is still there
    }

    private void AgentsAnswer() => _qvmRun!.AgentsAnswer(Path.Combine(_root.Path, "qubes.xml"), AgentScript.Version);

    // what reads: admin.vm.List, *.Get, *.GetAll, *.List, admin.vm.CurrentState...; everything else changes something
    private static bool IsRead(string method) => System.Text.RegularExpressions.Regex.IsMatch(method, @"\.(List|Get[A-Za-z]*|CurrentState)\z");

    [Fact]
    public void The_live_proof_a_forward_through_sys_net_and_the_disposable_sys_firewall_is_feature_sets_and_one_status_read_per_running_qube()
    {
        Start(withAgent: true);
        AgentsAnswer();
        QubesInventory Inventory()
        {
            using var offline = new OfflineRoot(_root.Path);
            return offline.GetInventory();
        }
        var running = Qubes.Where(q => Inventory().Get(q).State == PowerState.Running).Order(StringComparer.Ordinal).ToList();
        Assert.Equal(["sys-firewall", "sys-net", "work"], running); // as the sample records them; default-dvm is halted
        Assert.Equal(PowerState.Halted, Inventory().Get("default-dvm").State);
        Assert.Equal("DispVM", Inventory().Get("sys-firewall").ClassName);

        var add = Count(() =>
        {
            var r = Run("Add-QubePortForward work 443 -AllowFrom 192.168.1.0/24 -PassThru"); // no
            r.AssertNoErrors();
            Assert.Equal(running.Select(q => (q, PortForwardHopStatus.Applied)), r.Of<PortForwardHopResult>().Select(h => (h.VMName, h.Status)).Order());
            return r;
        }, "add, through the agent, the agents answering");
        var calls = _server!.Calls;
        // the only changing calls are feature.Set: the declaration, then one data key and gen for each of the three qubes
        Assert.Equal(7, add.Writes);
        Assert.All(calls.Where(c => !IsRead(c.Method)), c => Assert.Equal("admin.vm.feature.Set", c.Method));
        Assert.Equal(7, calls.Count(c => !IsRead(c.Method)));
        Assert.DoesNotContain(calls, c => c.Destination == "default-dvm" && !IsRead(c.Method));
        // and one status read per running qube, nothing else run in any qube
        Assert.Equal(running.Count, add.QvmRun);
        var reads = _qvmRun!.Calls.TakeLast(add.QvmRun).ToList();
        Assert.All(reads, c => Assert.Equal(AgentDelivery.StatusCommand, System.Text.Encoding.UTF8.GetString(c.Stdin)));
        Assert.Equal(running, reads.Select(c => c.Args.First(a => Qubes.Contains(a))).Order(StringComparer.Ordinal));
        Assert.Null(_qvmRun.Read("default-dvm", "/rw/config/qubes-firewall-user-script"));
        Assert.Null(_qvmRun.Read("sys-net", "/rw/config/qubes-firewall-user-script"));

        var remove = Count(() =>
        {
            var r = Run("Remove-QubePortForward work 443 -Confirm:$false -PassThru");
            r.AssertNoErrors();
            Assert.All(r.Of<PortForwardHopResult>(), h => Assert.Equal(PortForwardHopStatus.Applied, h.Status));
            return r;
        }, "remove, through the agent, the agents answering");
        calls = _server!.Calls;
        Assert.Equal(7, remove.Writes);
        Assert.All(calls.Where(c => !IsRead(c.Method)), c => Assert.True(c.Method is "admin.vm.feature.Set" or "admin.vm.feature.Remove", c.Method));
        Assert.DoesNotContain(calls, c => c.Destination == "default-dvm" && !IsRead(c.Method));
        Assert.Equal(running.Count, remove.QvmRun);
        foreach (var q in Qubes) Assert.DoesNotContain(Inventory().Get(q).Features.Keys, AgentFeatures.IsAgentFeature);
    }

    [Fact]
    public void Without_the_agent_the_forward_is_refused_naming_the_qubes_and_the_install_command_and_nothing_is_called_or_run()
    {
        Start(withAgent: false);
        var refused = Count(() => Run("Add-QubePortForward work 443 -AllowFrom 192.168.1.0/24"), "add, without the agent");
        Assert.Equal((0, 0), (refused.Writes, refused.QvmRun));
        Assert.DoesNotContain(_server!.Calls, c => !IsRead(c.Method));
        var run = Run("Add-QubePortForward work 443 -AllowFrom 192.168.1.0/24");
        var error = Assert.Single(run.Errors);
        Assert.StartsWith("QubeFirewallAgentMissing,", error.FullyQualifiedErrorId, StringComparison.Ordinal);
        Assert.Contains("Install-QubeFirewallAgent -VMName sys-net, sys-firewall, work", error.ToString(), StringComparison.Ordinal);
        Assert.Contains("Nothing was changed.", error.ToString(), StringComparison.Ordinal);
        Assert.Null(_qvmRun!.Read("default-dvm", "/rw/config/qubes-firewall-user-script"));
    }
}

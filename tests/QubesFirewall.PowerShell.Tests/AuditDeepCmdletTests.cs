using QubesFirewall.Engine.Agent;
using QubesFirewall.Engine.Model;
using QubesFirewall.Engine.Planning;
using QubesFirewall.TestQubesd;
using QubesFirewall.Tests.Shared;
using Xunit.Abstractions;

namespace QubesFirewall.PowerShell.Tests;

/// <summary>
/// Test-QubeFirewall on the live backend (stand-in qubesd, stand-in qvm-run whose agents answer): without -Deep it reads
/// dom0 facts only, so no qvm-run at all; -Deep reads each running agent's status once and the hook files, and reports
/// what they say. The Admin API calls and qvm-run processes of each run are written to the test output.
/// </summary>
[System.Runtime.Versioning.UnsupportedOSPlatform("windows")]
public sealed class AuditDeepCmdletTests : IDisposable
{
    private readonly ITestOutputHelper _output;
    private readonly LiveSampleSystem _live = new();

    public AuditDeepCmdletTests(ITestOutputHelper output) => _output = output;

    public void Dispose() => _live.Dispose();

    private PsRun Run(string script) => _live.Run(script);

    private (int Calls, int QvmRun, PsRun Run) Count(string command)
    {
        _live.Server.ClearCalls();
        var before = _live.QvmRun.Calls.Count;
        var run = Run(command);
        var calls = _live.Server.Calls;
        var qvm = _live.QvmRun.Calls.Count - before;
        _output.WriteLine($"{command}: {calls.Count} Admin API calls, {qvm} qvm-run processes, {run.Errors.Count} errors, {run.Of<AuditFinding>().Count()} findings");
        _output.WriteLine("  " + string.Join(", ", calls.GroupBy(c => c.Method).Select(g => $"{g.Key} x{g.Count()}")));
        foreach (var c in _live.QvmRun.Calls.Skip(before)) _output.WriteLine("  qvm-run " + string.Join(' ', c.Args.TakeLast(2)));
        return (calls.Count, qvm, run);
    }

    private const string FwScript = "/rw/config/qubes-firewall-user-script";

    // what reads: admin.vm.List, *.Get, *.GetAll, *.List; everything else changes something
    private static bool IsRead(string method) => System.Text.RegularExpressions.Regex.IsMatch(method, @"\.(List|Get[A-Za-z]*|CurrentState)\z");

    /// <summary>A forward through sys-net and sys-firewall, sys-net's agent failing, and the block an earlier version left in sys-net's hook file.</summary>
    private void ForwardWithAFailedAgentAndALeftover()
    {
        Run("Add-QubePortForward work 443 -AllowFrom 192.168.1.0/24").AssertNoErrors();
        _live.AgentsAnswer(failIn: "sys-net");
        _live.QvmRun.Put("sys-net", FwScript, "#!/bin/sh\n# >>> qubesfirewall managed block: do not edit >>>\n" +
            "add rule ip qubes qubesfw-dnat tcp dport 443 dnat to 10.138.10.201 comment \"tcp/443 to work\"\n# <<< qubesfirewall <<<\n", (UnixFileMode)0b111_101_101);
    }

    private List<string> StatusReads(int from) =>
        _live.QvmRun.Calls.Skip(from).Where(c => System.Text.Encoding.UTF8.GetString(c.Stdin) == AgentDelivery.StatusCommand).Select(c => c.Args[^2]).ToList();

    [Fact]
    public void Without_Deep_the_audit_runs_no_qvm_run_and_makes_only_reading_calls()
    {
        ForwardWithAFailedAgentAndALeftover();
        foreach (var command in new[] { "Test-QubeFirewall -Severity Info", "Test-QubeFirewall work -Severity Info", "Test-QubeFirewall sys-net, work -Severity Info" })
        {
            var (_, qvm, run) = Count(command);
            run.AssertNoErrors();
            Assert.Equal(0, qvm);
            Assert.All(_live.Server.Calls, c => Assert.True(IsRead(c.Method), c.Method));
            // what only a look inside the qubes finds is not reported, and nothing says the audit could not look
            Assert.DoesNotContain(run.Of<AuditFinding>(), f => f.Check is ForwardAuditChecks.UndeclaredPart or AuditChecks.CheckFailed
                or AgentStatusCheck.AgentFailed or AgentStatusCheck.AgentBehind or AgentStatusCheck.AgentNoStatus or AgentStatusCheck.AgentStatusNotRead);
        }
    }

    [Fact]
    public void Deep_reads_each_running_agents_status_once_and_reports_the_failed_agent_and_the_leftover()
    {
        ForwardWithAFailedAgentAndALeftover();
        var before = _live.QvmRun.Calls.Count;
        var (_, _, run) = Count("Test-QubeFirewall sys-net, work, untrusted -Severity Info -Deep");
        run.AssertNoErrors();
        Assert.All(_live.Server.Calls, c => Assert.True(IsRead(c.Method), c.Method));
        // one status read per running qube that records the agent; untrusted is halted: not asked, and said so
        Assert.Equal(["sys-net", "work"], StatusReads(before).Order(StringComparer.Ordinal));
        var findings = run.Of<AuditFinding>().ToList();
        var failed = Assert.Single(findings, f => f.Check == AgentStatusCheck.AgentFailed);
        Assert.Equal((AuditSeverity.Error, "sys-net", "Install-QubeFirewallAgent -VMName sys-net"), (failed.Severity, failed.VMName, failed.Fix));
        Assert.Contains("reports failed for generation ", failed.Message);
        Assert.Contains(": nft: Error: Could not process rule.", failed.Message);
        var halted = Assert.Single(findings, f => f.Check == AgentStatusCheck.AgentStatusNotRead);
        Assert.Equal((AuditSeverity.Info, "untrusted"), (halted.Severity, halted.VMName));
        var leftover = Assert.Single(findings, f => f.Check == ForwardAuditChecks.UndeclaredPart);
        Assert.Equal(("work", "Install-QubeFirewallAgent -VMName sys-net"), (leftover.VMName, leftover.Fix));
        Assert.StartsWith("sys-net:/rw/config/qubes-firewall-user-script holds port forward rules for tcp/443 to 'work'", leftover.Message);

        // every qube with a network qube or a feature of the module (sys-net): the running ones that record the agent are asked once each
        before = _live.QvmRun.Calls.Count;
        Count("Test-QubeFirewall -Severity Info -Deep").Run.AssertNoErrors();
        Assert.Equal(["personal", "sys-firewall", "sys-net", "work"], StatusReads(before).Order(StringComparer.Ordinal));
        Count("Test-QubeFirewall work -Severity Info -Deep").Run.AssertNoErrors();
    }
}

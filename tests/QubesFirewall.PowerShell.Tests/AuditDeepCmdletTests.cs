using QubesFirewall.Engine.Agent;
using QubesFirewall.Engine.Model;
using QubesFirewall.Engine.Planning;
using QubesFirewall.TestQubesd;
using QubesFirewall.Tests.Shared;
using Xunit.Abstractions;

namespace QubesFirewall.PowerShell.Tests;

[System.Runtime.Versioning.UnsupportedOSPlatform("windows")]
public sealed class AuditDeepCmdletTests : IDisposable
{
    private static readonly string OriginalPath = System.Environment.GetEnvironmentVariable("PATH") ?? "/usr/bin:/bin";
    private readonly ITestOutputHelper _output;
    private readonly SampleRootCopy _root = new();
    private readonly string _dir = Path.Combine(Path.GetTempPath(), "qfw-deep-" + Guid.NewGuid().ToString("N")[..10]);
    private readonly FakeQubesd _server;
    private readonly StandInQvmRun _qvmRun;

    public AuditDeepCmdletTests(ITestOutputHelper output)
    {
        _output = output;
        Directory.CreateDirectory(_dir);
        _server = new FakeQubesd(_root.Path, Path.Combine(_dir, "qubesd.sock"));
        _qvmRun = new StandInQvmRun(Path.Combine(_dir, "qvm-run"), powerStates: Path.Combine(_root.Path, "qubesfirewall-state"));
        _qvmRun.AgentsAnswer(Path.Combine(_root.Path, "qubes.xml"), AgentScript.Version);
    }

    public void Dispose()
    {
        _server.Dispose();
        try { Directory.Delete(_dir, recursive: true); } catch (IOException) { }
        _root.Dispose();
    }

    private PsRun Run(string script) => PowerShellHost.Run(script, environment: new Dictionary<string, string>
    {
        ["QUBESFW_ROOT"] = "",
        ["QUBESFW_QUBESD_SOCKET"] = _server.SocketPath,
        ["PATH"] = _qvmRun.BinFolder + ":" + OriginalPath,
    });

    private (int Calls, int QvmRun, PsRun Run) Count(string command)
    {
        _server.ClearCalls();
        var before = _qvmRun.Calls.Count;
        var run = Run(command);
        var calls = _server.Calls;
        var qvm = _qvmRun.Calls.Count - before;
        _output.WriteLine($"{command}: {calls.Count} Admin API calls, {qvm} qvm-run processes, {run.Errors.Count} errors, {run.Of<AuditFinding>().Count()} findings");
        _output.WriteLine("  " + string.Join(", ", calls.GroupBy(c => c.Method).Select(g => $"{g.Key} x{g.Count()}")));
        foreach (var c in _qvmRun.Calls.Skip(before)) _output.WriteLine("  qvm-run " + string.Join(' ', c.Args.TakeLast(2)));
        return (calls.Count, qvm, run);
    }

    [Fact]
    public void Figures()
    {
        Count("Test-QubeFirewall -Severity Info");
        Count("Test-QubeFirewall work -Severity Info");
        Count("Test-QubeFirewall -Severity Info -Deep");
        Count("Test-QubeFirewall work -Severity Info -Deep");
    }
}

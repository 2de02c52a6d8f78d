using QubesFirewall.TestQubesd;
using QubesFirewall.Tests.Shared;

namespace QubesFirewall.PowerShell.Tests;

/// <summary>
/// The live backend as the cmdlets meet it in dom0: a copy of the sample root served by the stand-in qubesd, and a stand-in
/// qvm-run on PATH (it refuses qubes whose power state is not Running) whose running agents answer their status read.
/// </summary>
[System.Runtime.Versioning.UnsupportedOSPlatform("windows")]
public sealed class LiveSampleSystem : IDisposable
{
    private static readonly string OriginalPath = System.Environment.GetEnvironmentVariable("PATH") ?? "/usr/bin:/bin";
    private readonly string _folder = Path.Combine(Path.GetTempPath(), "qfw-live-" + Guid.NewGuid().ToString("N")[..10]); // the socket, the stand-in executables

    public LiveSampleSystem()
    {
        Directory.CreateDirectory(_folder);
        Server = new FakeQubesd(Root.Path, Path.Combine(_folder, "qubesd.sock"));
        QvmRun = new StandInQvmRun(Path.Combine(_folder, "qvm-run"), powerStates: Path.Combine(Root.Path, "qubesfirewall-state"));
        AgentsAnswer();
    }

    public SampleRootCopy Root { get; } = new();

    public FakeQubesd Server { get; }

    public StandInQvmRun QvmRun { get; }

    /// <summary>The running qubes' agents confirm what dom0 set, except the one in <paramref name="failIn"/>, which reports a failure.</summary>
    public void AgentsAnswer(string? failIn = null) =>
        QvmRun.AgentsAnswer(Path.Combine(Root.Path, "qubes.xml"), Engine.Agent.AgentScript.Version, failIn: failIn);

    /// <summary>The environment in which the cmdlets reach this system only (a runspace's, or a child pwsh's).</summary>
    public Dictionary<string, string> Environment => new()
    {
        ["QUBESFW_ROOT"] = "",
        ["QUBESFW_QUBESD_SOCKET"] = Server.SocketPath,
        ["PATH"] = QvmRun.BinFolder + ":" + OriginalPath,
    };

    /// <summary>Runs <paramref name="script"/> in a runspace whose cmdlets reach this system only.</summary>
    public PsRun Run(string script) => PowerShellHost.Run(script, environment: Environment);

    public void Dispose()
    {
        Server.Dispose();
        try { Directory.Delete(_folder, recursive: true); } catch (IOException) { }
        Root.Dispose();
    }
}

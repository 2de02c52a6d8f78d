using QubesFirewall.TestQubesd;

namespace QubesFirewall.PowerShell.Tests;

/// <summary>
/// The stand-in qubesd serving a root folder on a socket of its own, and the environment that points a
/// runspace at it (no QUBESFW_ROOT, so the cmdlets pick the live backend).
/// </summary>
[System.Runtime.Versioning.UnsupportedOSPlatform("windows")]
public sealed class LiveServer : IDisposable
{
    private readonly string _socketDir = Path.Combine(Path.GetTempPath(), "qfw-sock-" + Guid.NewGuid().ToString("N")[..10]);

    public LiveServer(string root)
    {
        Directory.CreateDirectory(_socketDir);
        Server = new FakeQubesd(root, Path.Combine(_socketDir, "qubesd.sock"));
    }

    public FakeQubesd Server { get; }

    public Dictionary<string, string> Environment => new()
    {
        ["QUBESFW_ROOT"] = "",
        ["QUBESFW_QUBESD_SOCKET"] = Server.SocketPath,
    };

    public PsRun Run(string script) => PowerShellHost.Run(script, environment: Environment);

    public void Dispose()
    {
        Server.Dispose();
        try { Directory.Delete(_socketDir, recursive: true); } catch (IOException) { }
    }
}

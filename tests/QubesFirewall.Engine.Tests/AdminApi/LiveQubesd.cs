using System.Text;
using QubesFirewall.Engine.AdminApi;
using QubesFirewall.TestQubesd;
using QubesFirewall.Tests.Shared;

namespace QubesFirewall.Engine.Tests.AdminApi;

/// <summary>
/// A copy of the sample root served by the stand-in qubesd on a socket of its own, and the live
/// backend pointed at it. Also a folder with a stand-in qvm-run on a PATH of the test's own.
/// </summary>
[System.Runtime.Versioning.UnsupportedOSPlatform("windows")]
public sealed class LiveQubesd : IDisposable
{
    public LiveQubesd(Action<FakeQubesd>? configure = null)
    {
        Directory = Path.Combine(Path.GetTempPath(), "qfw-live-" + Guid.NewGuid().ToString("N")[..10]);
        Root = Path.Combine(Directory, "root");
        Copy(OfflineRootTests.SamplePath(), Root);
        Server = new FakeQubesd(Root, Path.Combine(Directory, "qubesd.sock"));
        configure?.Invoke(Server);
        QvmRun = new StandInQvmRun(Path.Combine(Directory, "qvm-run-stand-in"));
        Backend = new AdminApiBackend(new QubesdClient(Server.SocketPath), QvmRun.Runner);
    }

    public string Directory { get; }
    public string Root { get; }
    public FakeQubesd Server { get; }
    public StandInQvmRun QvmRun { get; }
    public AdminApiBackend Backend { get; }

    /// <summary>A fresh backend (a new cmdlet invocation: nothing cached).</summary>
    public AdminApiBackend NewBackend() => new(new QubesdClient(Server.SocketPath), QvmRun.Runner);

    internal static void Copy(string from, string to)
    {
        System.IO.Directory.CreateDirectory(to);
        foreach (var f in System.IO.Directory.EnumerateFiles(from)) File.Copy(f, Path.Combine(to, Path.GetFileName(f)));
        foreach (var d in System.IO.Directory.EnumerateDirectories(from)) Copy(d, Path.Combine(to, Path.GetFileName(d)));
    }

    public void Dispose()
    {
        Server.Dispose();
        try { System.IO.Directory.Delete(Directory, recursive: true); } catch (IOException) { }
    }
}


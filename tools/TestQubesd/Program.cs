using System.Runtime.InteropServices;
using QubesFirewall.TestQubesd;

// Serves an offline Qubes root on a Unix socket the way qubesd serves dom0 (see FakeQubesd), until
// SIGTERM, SIGINT or end of standard input. Used by the Pester suite and the benchmark:
//   dotnet TestQubesd.dll <root> <socket> [--log <file>] [--protocol-errors-as-exceptions] [--no-getall]
//       [--service-time-ms N] [--latency-ms N]   (qubesd's modelled work per call, behind one lock; per-connection latency)
if (args.Length < 2)
{
    Console.Error.WriteLine("usage: TestQubesd <qubes root> <socket path> [--log <file>] [--protocol-errors-as-exceptions] [--no-getall] [--service-time-ms N] [--latency-ms N]");
    return 2;
}
using var server = new FakeQubesd(args[0], args[1]);
for (var i = 2; i < args.Length; i++)
{
    switch (args[i])
    {
        case "--log" when i + 1 < args.Length: server.LogPath = args[++i]; break;
        case "--protocol-errors-as-exceptions": server.ProtocolErrorsAsExceptions = true; break;
        case "--no-getall": server.SupportsGetAll = false; break;
        case "--service-time-ms" when i + 1 < args.Length: server.ServiceTime = TimeSpan.FromMilliseconds(double.Parse(args[++i], System.Globalization.CultureInfo.InvariantCulture)); break;
        case "--latency-ms" when i + 1 < args.Length: server.ConnectionLatency = TimeSpan.FromMilliseconds(double.Parse(args[++i], System.Globalization.CultureInfo.InvariantCulture)); break;
        default: Console.Error.WriteLine($"unknown argument {args[i]}"); return 2;
    }
}
using var stop = new ManualResetEventSlim();
using var term = PosixSignalRegistration.Create(PosixSignal.SIGTERM, c => { c.Cancel = true; stop.Set(); });
using var intr = PosixSignalRegistration.Create(PosixSignal.SIGINT, c => { c.Cancel = true; stop.Set(); });
Console.WriteLine($"listening on {server.SocketPath}");
Console.Out.Flush();
if (Console.IsInputRedirected)
    _ = Task.Run(() => { try { while (Console.In.ReadLine() is not null) { } } catch (IOException) { } stop.Set(); });
stop.Wait();
return 0;

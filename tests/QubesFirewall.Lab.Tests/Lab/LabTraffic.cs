using System.Diagnostics;
using System.Globalization;
using System.Net;
using System.Net.Sockets;
using System.Text;

namespace QubesFirewall.Lab.Tests.Lab;

public enum LabProtocol
{
    Tcp,
    Udp,
}

/// <summary>
/// A socat server inside one node's namespace. Each connection (TCP) or datagram (UDP) is answered with one line
/// <c>&lt;node&gt; &lt;peer address&gt;</c>, so a client learns which node answered and which source address it saw.
/// Runs in its own process group; <see cref="Dispose"/> kills the group (forked children included).
/// </summary>
public sealed class LabServer : IDisposable
{
    private readonly Process _process;
    private readonly StringBuilder _stderr = new();
    private readonly Action<LabServer> _onDispose;
    private int _disposed;

    internal LabServer(Process process, string node, int port, LabProtocol protocol, Action<LabServer> onDispose)
    {
        _process = process;
        Node = node;
        Port = port;
        Protocol = protocol;
        _onDispose = onDispose;
        _process.ErrorDataReceived += (_, e) =>
        {
            if (e.Data is not null)
            {
                lock (_stderr)
                {
                    _stderr.AppendLine(e.Data);
                }
            }
        };
        _process.BeginErrorReadLine();
        _process.BeginOutputReadLine();
    }

    public string Node { get; }

    public int Port { get; }

    public LabProtocol Protocol { get; }

    public int ProcessId => _process.Id;

    public bool HasExited => _process.HasExited;

    public string StdErr
    {
        get
        {
            lock (_stderr)
            {
                return _stderr.ToString();
            }
        }
    }

    /// <summary>Waits until the socket listens inside the namespace (read from /proc/&lt;pid&gt;/net, no traffic sent).</summary>
    internal void WaitUntilListening(bool ipv4Only, TimeSpan timeout)
    {
        var sw = Stopwatch.StartNew();
        var portHex = ":" + Port.ToString("X4", CultureInfo.InvariantCulture);
        var (table, state) = Protocol == LabProtocol.Tcp ? ("tcp", "0A") : ("udp", "07");
        var file = $"/proc/{_process.Id}/net/{table}{(ipv4Only ? "" : "6")}";
        while (sw.Elapsed < timeout)
        {
            if (_process.HasExited)
            {
                throw new InvalidOperationException($"server {Node}:{Port}/{Protocol} exited at start: {StdErr}");
            }

            // until socat is exec'd the pid still belongs to setsid/ip, whose /proc/<pid>/net is another namespace's
            if (LabProcess.CommOf(_process.Id) == "socat")
            {
                try
                {
                    foreach (var line in File.ReadLines(file).Skip(1))
                    {
                        var cols = line.Split(' ', StringSplitOptions.RemoveEmptyEntries);
                        if (cols.Length > 3 && cols[1].EndsWith(portHex, StringComparison.Ordinal) && cols[3] == state)
                        {
                            return;
                        }
                    }
                }
                catch (IOException)
                {
                    // process went away between the checks; loop reports it
                }
            }

            Thread.Sleep(5);
        }

        throw new TimeoutException($"server {Node}:{Port}/{Protocol} did not start listening within {timeout}: {StdErr}");
    }

    public void Dispose()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0)
        {
            return;
        }

        LabProcess.KillGroup(_process);
        _process.Dispose();
        _onDispose(this);
    }

    public override string ToString() => $"{Node}:{Port}/{Protocol} (pid {_process.Id})";
}

/// <summary>Outcome of a client attempt.</summary>
/// <param name="Connected">True when the server's reply line arrived.</param>
/// <param name="ServerNode">The node whose server answered.</param>
/// <param name="PeerAddress">The source address the server saw (normalized: IPv4-mapped addresses as IPv4, IPv6 compressed).</param>
/// <param name="Reply">The raw reply line.</param>
/// <param name="Error">socat's error output (refused, no route, timed out...).</param>
public sealed record LabConnectResult(
    bool Connected,
    string? ServerNode,
    string? PeerAddress,
    string Reply,
    string Error,
    TimeSpan Elapsed,
    string CommandLine)
{
    public override string ToString() =>
        Connected
            ? $"connected to {ServerNode}, seen as {PeerAddress} ({Elapsed.TotalMilliseconds:F0} ms)"
            : $"not connected after {Elapsed.TotalMilliseconds:F0} ms: {Error.Trim()} [{CommandLine}]";
}

internal static class LabTraffic
{
    public static List<string> ServerArgs(string node, int port, LabProtocol protocol, string? bind, out bool ipv4Only)
    {
        string listen;
        ipv4Only = false;
        var kind = protocol == LabProtocol.Tcp ? "TCP" : "UDP";
        var suffix = protocol == LabProtocol.Tcp ? "LISTEN" : "RECVFROM";
        if (bind is null)
        {
            // dual stack: one server answers IPv4 and IPv6
            listen = $"{kind}6-{suffix}:{port},ipv6only=0,fork,reuseaddr";
        }
        else
        {
            var ip = ParseAddress(bind);
            ipv4Only = ip.AddressFamily == AddressFamily.InterNetwork;
            listen = ipv4Only
                ? $"{kind}4-{suffix}:{port},bind={ip},fork,reuseaddr"
                : $"{kind}6-{suffix}:{port},bind=[{ip}],ipv6only=1,fork,reuseaddr";
        }

        // The reply command first reads the client's line (UDP: the datagram; TCP: EOF, the lab's client sends
        // nothing): exiting before socat hands over the datagram would race with it (EPIPE loses the reply).
        // -T5 ends a child whose client neither sends a line nor closes. No -lp: socat derives the SOCAT_*
        // variable names from the program name.
        return ["socat", "-T5", listen, $"SYSTEM:read -r line; echo {node} $SOCAT_PEERADDR"];
    }

    public static List<string> ClientArgs(string host, int port, LabProtocol protocol, TimeSpan timeout, string? bind)
    {
        var ip = ParseAddress(host);
        var v6 = ip.AddressFamily == AddressFamily.InterNetworkV6;
        var seconds = Math.Max(0.1, timeout.TotalSeconds).ToString("0.###", CultureInfo.InvariantCulture);
        var target = (protocol, v6) switch
        {
            (LabProtocol.Tcp, false) => $"TCP4:{ip}:{port},connect-timeout={seconds}",
            (LabProtocol.Tcp, true) => $"TCP6:[{ip}]:{port},connect-timeout={seconds}",
            (LabProtocol.Udp, false) => $"UDP4:{ip}:{port}",
            _ => $"UDP6:[{ip}]:{port}",
        };
        if (bind is not null)
        {
            var b = ParseAddress(bind);
            target += b.AddressFamily == AddressFamily.InterNetworkV6 ? $",bind=[{b}]" : $",bind={b}";
        }

        return ["socat", $"-T{seconds}", $"-t{seconds}", "-", target];
    }

    public static LabConnectResult Connect(IReadOnlyList<string> argv, LabProtocol protocol, TimeSpan timeout)
    {
        var sw = Stopwatch.StartNew();
        using var p = LabProcess.Start(argv, redirectStdin: true);
        var stderr = p.StandardError.ReadToEndAsync();
        var firstLine = p.StandardOutput.ReadLineAsync();
        try
        {
            if (protocol == LabProtocol.Udp)
            {
                // a datagram needs a payload to carry; TCP only needs the connection
                p.StandardInput.Write("ping\n");
                p.StandardInput.Flush();
            }
        }
        catch (IOException)
        {
            // socat already gone: its error output tells why
        }

        if (protocol == LabProtocol.Tcp)
        {
            try { p.StandardInput.Close(); } catch (IOException) { }
        }

        // socat enforces the timeout itself; the margin only guards against a hung process
        var gotLine = firstLine.Wait(timeout + TimeSpan.FromSeconds(1));
        var line = gotLine ? firstLine.Result : null;
        LabProcess.KillGroup(p);
        try { p.StandardInput.Close(); } catch (IOException) { } catch (InvalidOperationException) { }

        var err = stderr.Wait(TimeSpan.FromSeconds(2)) ? stderr.Result : "";
        sw.Stop();
        var cmd = LabProcess.Quote(argv);
        if (string.IsNullOrWhiteSpace(line))
        {
            return new LabConnectResult(false, null, null, line ?? "", gotLine ? err : err + "(no reply within timeout)", sw.Elapsed, cmd);
        }

        var parts = line.Trim().Split(' ', 2);
        var peer = parts.Length == 2 ? NormalizePeer(parts[1]) : null;
        return new LabConnectResult(true, parts[0], peer, line, err, sw.Elapsed, cmd);
    }

    public static string NormalizePeer(string raw)
    {
        var s = raw.Trim().Trim('[', ']');
        if (!IPAddress.TryParse(s, out var ip))
        {
            return s;
        }

        return ip.IsIPv4MappedToIPv6 ? ip.MapToIPv4().ToString() : ip.ToString();
    }

    public static IPAddress ParseAddress(string text) =>
        IPAddress.TryParse(text.Trim('[', ']'), out var ip)
            ? ip
            : throw new ArgumentException($"'{text}' is not an IP address (the lab never resolves names)");
}

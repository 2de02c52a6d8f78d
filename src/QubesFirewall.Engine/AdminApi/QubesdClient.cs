using System.Diagnostics;
using System.Globalization;
using System.Net.Sockets;
using System.Text;
using System.Text.RegularExpressions;

namespace QubesFirewall.Engine.AdminApi;

/// <summary>
/// One Admin API call as it went over the socket (for counting, logging and tests).
/// </summary>
public sealed record QubesdCallRecord(string Method, string? Argument, string Destination, int RequestBytes, int ReplyBytes, TimeSpan Elapsed, string? Failure);

/// <summary>
/// qubesd's Admin API over its Unix socket, framed the way qubesadmin's <c>QubesLocal.qubesd_call</c>
/// frames it in dom0 (core-admin-client <c>qubesadmin/app.py</c>; the server side is core-admin
/// <c>qubes/api/__init__.py</c> <c>QubesDaemonProtocol</c>):
/// <list type="bullet">
/// <item>one connection per call;</item>
/// <item>request: <c>&lt;method&gt;+&lt;arg&gt; dom0 name &lt;dest&gt;</c> in ASCII, a NUL, the payload bytes, then
/// a half-close (shutdown of the write side), which is what makes qubesd parse the request;</item>
/// <item>qubesd reads at most 65,536 bytes (header and payload together) and aborts the connection
/// past that: larger requests are refused here before anything is sent;</item>
/// <item>reply: <c>0</c> NUL content (success), or <c>2</c> NUL exception class NUL traceback (empty
/// unless qubesd runs with --debug) NUL message NUL (a refusal qubesd explains), read to the end of
/// the stream; an empty reply means qubesd dropped the request without a reason (an unhandled error
/// in a handler, e.g. its firewall rule parser, or before R4.3 any ProtocolError or PermissionDenied).</item>
/// </list>
/// </summary>
public sealed partial class QubesdClient
{
    /// <summary>qubesd's request buffer (<c>QubesDaemonProtocol.buffer_size</c>): header plus payload.</summary>
    public const int MaxRequestBytes = 65536;

    /// <summary>The source qube of every call from dom0.</summary>
    public const string Source = "dom0";

    private long _calls;

    public QubesdClient(string socketPath, TimeSpan? timeout = null)
    {
        SocketPath = socketPath;
        Timeout = timeout ?? TimeSpan.FromSeconds(60);
    }

    public string SocketPath { get; }

    /// <summary>How long one call may take, connect to last reply byte (admin.vm.Start gets <see cref="LongTimeout"/>).</summary>
    public TimeSpan Timeout { get; set; }

    /// <summary>For calls that wait for a qube (admin.vm.Start): qubesd's own qrexec timeout is 60 s by default.</summary>
    public TimeSpan LongTimeout { get; set; } = TimeSpan.FromMinutes(5);

    /// <summary>Calls sent so far (connections opened), failed ones included.</summary>
    public long CallCount => Interlocked.Read(ref _calls);

    /// <summary>Called after each call, from the calling thread.</summary>
    public Action<QubesdCallRecord>? CallCompleted { get; set; }

    [GeneratedRegex(@"\A[A-Za-z][A-Za-z0-9._]*\z", RegexOptions.CultureInvariant)]
    private static partial Regex MethodPattern();

    // qrexec service arguments: what qrexec itself lets through (letters, digits, - _ . +).
    [GeneratedRegex(@"\A[A-Za-z0-9_.+-]*\z", RegexOptions.CultureInvariant)]
    private static partial Regex ArgumentPattern();

    [GeneratedRegex(@"\A[A-Za-z0-9_.-]+\z", RegexOptions.CultureInvariant)]
    private static partial Regex DestinationPattern();

    /// <summary>
    /// The exact bytes of a request: <c>method+arg dom0 name dest</c>, NUL, payload. The header is
    /// written even when <paramref name="argument"/> is null (<c>method+ dom0 name dest</c>), as qubesadmin does.
    /// </summary>
    public static byte[] FrameRequest(string method, string? argument, string destination, ReadOnlySpan<byte> payload)
    {
        if (!MethodPattern().IsMatch(method))
            throw QubesFirewallException.Invalid(ErrorIds.InvalidAdminApiCall, $"'{Model.RuleGrammar.Printable(method)}' is not an Admin API method name.", method);
        if (argument is not null && !ArgumentPattern().IsMatch(argument))
            throw QubesFirewallException.Invalid(ErrorIds.InvalidAdminApiCall, $"'{Model.RuleGrammar.Printable(argument)}' cannot be an Admin API argument (letters, digits, '-', '_', '.', '+').", argument);
        if (!DestinationPattern().IsMatch(destination))
            throw QubesFirewallException.Invalid(ErrorIds.InvalidAdminApiCall, $"'{Model.RuleGrammar.Printable(destination)}' cannot be an Admin API destination.", destination);
        var header = Encoding.ASCII.GetBytes($"{method}+{argument} {Source} name {destination}\0");
        var request = new byte[header.Length + payload.Length];
        header.CopyTo(request, 0);
        payload.CopyTo(request.AsSpan(header.Length));
        return request;
    }

    /// <summary>Size of the request header for a call (with its NUL), to check a payload against the limit.</summary>
    public static int HeaderBytes(string method, string? argument, string destination) =>
        Encoding.ASCII.GetByteCount($"{method}+{argument} {Source} name {destination}") + 1;

    /// <summary>
    /// When set (-WhatIf), calls that change something are reported here with their payload and
    /// answered with an empty success instead of being sent; calls that only read still go out.
    /// </summary>
    public Action<string>? DryRun { get; set; }

    /// <summary>Methods that only read: Get, GetAll, List and the like.</summary>
    public static bool IsReadOnly(string method)
    {
        var verb = method[(method.LastIndexOf('.') + 1)..];
        return verb is "Get" or "GetAll" or "List" or "GetDefault" or "CurrentState" or "Available";
    }

    /// <summary>Calls a method and returns the content of a success reply; every other reply throws.</summary>
    public byte[] Call(string method, string destination, string? argument = null, ReadOnlySpan<byte> payload = default, TimeSpan? timeout = null)
    {
        var request = FrameRequest(method, argument, destination, payload);
        var what = Describe(method, argument, destination);
        if (request.Length > MaxRequestBytes)
            throw new QubesFirewallException(ErrorIds.RequestTooLarge, FailureKind.InvalidArgument,
                $"The {what} request would be {request.Length.ToString("N0", CultureInfo.InvariantCulture)} bytes; qubesd reads at most {MaxRequestBytes.ToString("N0", CultureInfo.InvariantCulture)} bytes per request and drops larger ones. Nothing was sent.", what);
        if (DryRun is { } report && !IsReadOnly(method))
        {
            var header = $"{method}+{argument} {Source} name {destination}";
            report(payload.IsEmpty ? header : header + " with payload:\n" + Encoding.ASCII.GetString(payload));
            return [];
        }

        Interlocked.Increment(ref _calls);
        var watch = Stopwatch.StartNew();
        byte[]? reply = null;
        string? failure = null;
        try
        {
            reply = Exchange(request, what, timeout ?? Timeout);
            return ParseReply(reply, method, argument, destination);
        }
        catch (QubesFirewallException ex)
        {
            failure = ex.ErrorId;
            throw;
        }
        finally
        {
            CallCompleted?.Invoke(new QubesdCallRecord(method, argument, destination, request.Length, reply?.Length ?? 0, watch.Elapsed, failure));
        }
    }

    /// <summary><see cref="Call"/> with the content decoded as UTF-8 (qubesd encodes every reply so).</summary>
    public string CallText(string method, string destination, string? argument = null, ReadOnlySpan<byte> payload = default, TimeSpan? timeout = null)
    {
        var content = Call(method, destination, argument, payload, timeout);
        try
        {
            return StrictUtf8.GetString(content);
        }
        catch (DecoderFallbackException)
        {
            throw new QubesFirewallException(ErrorIds.QubesdBadReply, FailureKind.ProtocolError,
                $"qubesd's reply to {Describe(method, argument, destination)} is not valid UTF-8.", Describe(method, argument, destination));
        }
    }

    private static readonly UTF8Encoding StrictUtf8 = new(encoderShouldEmitUTF8Identifier: false, throwOnInvalidBytes: true);

    internal static string Describe(string method, string? argument, string destination) =>
        argument is null ? $"{method} (on {destination})" : $"{method}+{argument} (on {destination})";

    private byte[] Exchange(byte[] request, string what, TimeSpan timeout)
    {
        using var cts = new CancellationTokenSource(timeout);
        using var socket = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        var phase = "connect to";
        try
        {
            socket.ConnectAsync(new UnixDomainSocketEndPoint(SocketPath), cts.Token).AsTask().GetAwaiter().GetResult();
            phase = "send the request to";
            var sent = 0;
            while (sent < request.Length)
                sent += socket.SendAsync(request.AsMemory(sent), SocketFlags.None, cts.Token).AsTask().GetAwaiter().GetResult();
            socket.Shutdown(SocketShutdown.Send);
            phase = "read the reply from";
            using var reply = new MemoryStream();
            var buffer = new byte[16384];
            while (true)
            {
                var n = socket.ReceiveAsync(buffer, SocketFlags.None, cts.Token).AsTask().GetAwaiter().GetResult();
                if (n == 0) break;
                reply.Write(buffer, 0, n);
            }
            return reply.ToArray();
        }
        catch (OperationCanceledException)
        {
            throw new QubesFirewallException(ErrorIds.QubesdTimeout, FailureKind.ConnectionError,
                $"qubesd did not answer {what} within {timeout.TotalSeconds.ToString("0.#", CultureInfo.InvariantCulture)} s (while trying to {phase} {SocketPath}). The call may still complete inside qubesd: check the state before retrying.", what);
        }
        catch (SocketException ex) when (phase == "connect to")
        {
            var (id, kind, hint) = ex.SocketErrorCode switch
            {
                SocketError.AccessDenied => (ErrorIds.QubesdAccessDenied, FailureKind.PermissionDenied, "Run pwsh as a user of group qubes (the dom0 user is) or as root."),
                SocketError.AddressNotAvailable or SocketError.ConnectionRefused => (ErrorIds.QubesdNotRunning, FailureKind.ResourceUnavailable, "Is qubesd running? (sudo systemctl status qubesd)"),
                _ => (ErrorIds.QubesdUnreachable, FailureKind.ConnectionError, "Is qubesd running? (sudo systemctl status qubesd)"),
            };
            throw new QubesFirewallException(id, kind, $"Cannot connect to qubesd at {SocketPath}: {ex.Message}. {hint}", SocketPath, ex);
        }
        catch (Exception ex) when (ex is SocketException or IOException or ObjectDisposedException)
        {
            throw new QubesFirewallException(ErrorIds.QubesdConnectionLost, FailureKind.ConnectionError,
                $"The connection to qubesd broke while trying to {phase} {SocketPath} for {what}: {ex.Message}. Check the state before retrying: qubesd may have acted on the call.", what, ex);
        }
    }

    /// <summary>Parses a complete reply; success content is returned, everything else throws.</summary>
    public static byte[] ParseReply(byte[] reply, string method, string? argument, string destination)
    {
        var what = Describe(method, argument, destination);
        if (reply.Length == 0)
            throw new QubesFirewallException(ErrorIds.QubesdEmptyReply, FailureKind.InvalidOperation,
                $"qubesd refused the request without a reason ({what}): it closed the connection without an answer. qubesd does this when a handler fails on a value it could not parse (its firewall rule parser, for one), when the call is unknown to this Qubes release, or when it is not allowed; its journal in dom0 (journalctl -u qubesd) says which.", what);
        if (reply.Length < 2 && reply[0] is (byte)'0' or (byte)'1' or (byte)'2')
            throw Truncated(what, "it ends inside the reply header");
        if (reply.Length < 2 || reply[1] != 0)
            throw new QubesFirewallException(ErrorIds.QubesdBadReply, FailureKind.ProtocolError,
                $"qubesd's reply to {what} does not start with a reply header (a digit and a NUL).", what);
        switch (reply[0])
        {
            case (byte)'0':
                return reply[2..];
            case (byte)'2':
            {
                // class NUL traceback NUL message NUL [format arguments, each NUL-terminated: qubesd before R4.1]
                var fields = Split(reply.AsSpan(2));
                if (fields.Count < 3 || reply[^1] != 0)
                    throw Truncated(what, "the exception it reports is cut short");
                var cls = Encoding.ASCII.GetString(fields[0]);
                var traceback = Encoding.UTF8.GetString(fields[1]);
                var message = Encoding.UTF8.GetString(fields[2]);
                var args = fields.Skip(3).Take(fields.Count - 4).Select(f => Encoding.UTF8.GetString(f)).ToList();
                if (args.Count > 0) message = ApplyFormat(message, args);
                throw QubesdException.From(cls, message, traceback, what);
            }
            case (byte)'1':
                throw new QubesFirewallException(ErrorIds.QubesdBadReply, FailureKind.ProtocolError,
                    $"qubesd answered {what} with an event stream, not a reply.", what);
            default:
                throw new QubesFirewallException(ErrorIds.QubesdBadReply, FailureKind.ProtocolError,
                    $"qubesd's reply to {what} starts with byte 0x{reply[0]:x2}, which is neither success (0x30) nor an exception (0x32).", what);
        }
    }

    internal static QubesFirewallException Truncated(string what, string detail) =>
        new(ErrorIds.QubesdReplyTruncated, FailureKind.ConnectionError,
            $"The connection to qubesd closed in the middle of the reply to {what} ({detail}). Check the state before retrying: qubesd may have acted on the call.", what);

    private static List<byte[]> Split(ReadOnlySpan<byte> data)
    {
        var fields = new List<byte[]>();
        while (true)
        {
            var nul = data.IndexOf((byte)0);
            if (nul < 0) { fields.Add(data.ToArray()); return fields; }
            fields.Add(data[..nul].ToArray());
            data = data[(nul + 1)..];
        }
    }

    // Old qubesd sent a %-format string and its arguments separately; put them together.
    private static string ApplyFormat(string format, IReadOnlyList<string> args)
    {
        var sb = new StringBuilder();
        var next = 0;
        for (var i = 0; i < format.Length; i++)
        {
            if (format[i] == '%' && i + 1 < format.Length)
            {
                var c = format[i + 1];
                if (c == '%') { sb.Append('%'); i++; continue; }
                if (c is 's' or 'r' or 'd' && next < args.Count) { sb.Append(args[next++]); i++; continue; }
            }
            sb.Append(format[i]);
        }
        for (; next < args.Count; next++) sb.Append(' ').Append(args[next]);
        return sb.ToString();
    }
}

/// <summary>
/// qubesd refused a call and said why: its exception class (e.g. <c>QubesVMNotFoundError</c>) and message.
/// The ErrorId is specific for the classes the cmdlets meet (QubeNotFound, FeatureNotFound, ...) and
/// <c>QubesdError</c> otherwise; the message always names qubesd's class.
/// </summary>
public sealed class QubesdException : QubesFirewallException
{
    private QubesdException(string errorId, FailureKind kind, string message, string qubesdClass, string qubesdMessage, string traceback, string call)
        : base(errorId, kind, message, call)
    {
        QubesdClass = qubesdClass;
        QubesdMessage = qubesdMessage;
        Traceback = traceback;
        Call = call;
    }

    /// <summary>qubesd's exception class name, as sent.</summary>
    public string QubesdClass { get; }

    /// <summary>qubesd's message, as sent.</summary>
    public string QubesdMessage { get; }

    /// <summary>qubesd's traceback (empty unless qubesd runs with --debug).</summary>
    public string Traceback { get; }

    /// <summary>The call that was refused, e.g. <c>admin.vm.firewall.Get (on work)</c>.</summary>
    public string Call { get; }

    internal static QubesdException From(string cls, string message, string traceback, string call)
    {
        var (id, kind) = cls switch
        {
            "QubesVMNotFoundError" => (ErrorIds.QubeNotFound, FailureKind.ObjectNotFound),
            "QubesFeatureNotFoundError" => (ErrorIds.FeatureNotFound, FailureKind.ObjectNotFound),
            "QubesNoSuchPropertyError" => (ErrorIds.PropertyNotFound, FailureKind.ObjectNotFound),
            "QubesPropertyAccessError" or "QubesPropertyValueError" or "QubesValueError" => (ErrorIds.QubesdRefusedValue, FailureKind.InvalidArgument),
            "QubesVMNotHaltedError" or "QubesVMNotRunningError" or "QubesVMNotStartedError" or "QubesVMNotPausedError" => (ErrorIds.QubeStateConflict, FailureKind.InvalidOperation),
            "PermissionDenied" => (ErrorIds.QubesdPermissionDenied, FailureKind.PermissionDenied),
            "ProtocolError" => (ErrorIds.QubesdProtocolError, FailureKind.ProtocolError),
            _ => (ErrorIds.QubesdError, FailureKind.InvalidOperation),
        };
        var text = $"qubesd refused {call}: {cls}: {message}";
        return new QubesdException(id, kind, text, cls, message, traceback, call);
    }
}

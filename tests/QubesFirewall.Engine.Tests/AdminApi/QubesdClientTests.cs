using System.Net.Sockets;
using System.Text;
using QubesFirewall.Engine.AdminApi;
using QubesFirewall.TestQubesd;

namespace QubesFirewall.Engine.Tests.AdminApi;

/// <summary>The framing, byte for byte, and every way a reply can go wrong.</summary>
[System.Runtime.Versioning.UnsupportedOSPlatform("windows")]
public sealed class QubesdClientTests : IDisposable
{
    private readonly LiveQubesd _live = new();

    public void Dispose() => _live.Dispose();

    private QubesdClient Client => _live.Backend.Client;

    [Fact]
    public void A_request_is_method_plus_arg_source_name_dest_nul_payload()
    {
        Assert.Equal("admin.vm.feature.Set+x.y dom0 name work\0v"u8.ToArray(), QubesdClient.FrameRequest("admin.vm.feature.Set", "x.y", "work", "v"u8));
        Assert.Equal("admin.vm.List+ dom0 name dom0\0"u8.ToArray(), QubesdClient.FrameRequest("admin.vm.List", null, "dom0", default));
        Assert.Equal(QubesdClient.FrameRequest("admin.vm.List", null, "dom0", default).Length, QubesdClient.HeaderBytes("admin.vm.List", null, "dom0"));
    }

    [Theory]
    [InlineData("admin.vm.List", null, "work;reboot")]
    [InlineData("admin.vm.List", "a b", "work")]
    [InlineData("admin vm", null, "work")]
    [InlineData("admin.vm.feature.Get", "x\0y", "work")]
    public void Nothing_that_could_break_the_framing_is_sent(string method, string? arg, string dest)
    {
        var ex = Assert.Throws<QubesFirewallException>(() => Client.Call(method, dest, arg));
        Assert.Equal("InvalidAdminApiCall", ex.ErrorId);
        Assert.Empty(_live.Server.Calls);
    }

    [Fact]
    public void A_success_reply_returns_the_content_and_the_call_is_counted()
    {
        var text = Client.CallText("admin.vm.List", "work");
        Assert.Equal("work class=AppVM state=Running\n", text);
        Assert.Equal(1, Client.CallCount);
        Assert.Equal("admin.vm.List+ dom0 name work\0"u8.ToArray(), Assert.Single(_live.Server.Calls).Raw);
    }

    [Fact]
    public void An_exception_reply_carries_qubesds_class_and_message()
    {
        _live.Server.InjectFault(new Fault(FaultKind.ExceptionReply, "admin.vm.firewall.Get", ExceptionClass: "QubesException", Message: "Something qubesd did not like"));
        var ex = Assert.Throws<QubesdException>(() => Client.Call("admin.vm.firewall.Get", "work"));
        Assert.Equal("QubesdError", ex.ErrorId);
        Assert.Equal("QubesException", ex.QubesdClass);
        Assert.Equal("Something qubesd did not like", ex.QubesdMessage);
        Assert.Contains("QubesException", ex.Message);
        Assert.Contains("admin.vm.firewall.Get (on work)", ex.Message);
    }

    [Fact]
    public void An_unknown_qube_is_QubeNotFound_with_qubesds_words()
    {
        var ex = Assert.Throws<QubesdException>(() => Client.Call("admin.vm.firewall.Get", "nosuch"));
        Assert.Equal("QubeNotFound", ex.ErrorId);
        Assert.Equal("QubesVMNotFoundError", ex.QubesdClass);
        Assert.Contains("No such domain: 'nosuch'", ex.Message);
    }

    [Fact]
    public void An_empty_reply_is_explained_in_plain_words()
    {
        _live.Server.InjectFault(new Fault(FaultKind.EmptyReply));
        var ex = Assert.Throws<QubesFirewallException>(() => Client.Call("admin.vm.List", "dom0"));
        Assert.Equal("QubesdEmptyReply", ex.ErrorId);
        Assert.StartsWith("qubesd refused the request without a reason", ex.Message);
        Assert.Contains("journalctl", ex.Message);
    }

    [Fact]
    public void A_slow_reply_times_out()
    {
        _live.Server.InjectFault(new Fault(FaultKind.SlowReply, Delay: TimeSpan.FromSeconds(3)));
        var client = new QubesdClient(_live.Server.SocketPath, TimeSpan.FromMilliseconds(300));
        var ex = Assert.Throws<QubesFirewallException>(() => client.Call("admin.vm.List", "dom0"));
        Assert.Equal("QubesdTimeout", ex.ErrorId);
        Assert.Contains("did not answer", ex.Message);
    }

    [Fact]
    public void A_slow_reply_within_the_timeout_is_read()
    {
        _live.Server.InjectFault(new Fault(FaultKind.SlowReply, Delay: TimeSpan.FromMilliseconds(200)));
        Assert.Contains("work class=AppVM", Client.CallText("admin.vm.List", "dom0"));
    }

    [Theory]
    [InlineData("admin.vm.List", "dom0")]
    [InlineData("admin.vm.firewall.Get", "work")]
    [InlineData("admin.vm.property.GetAll", "work")]
    public void A_connection_closed_mid_reply_is_reported_not_parsed(string method, string dest)
    {
        _live.Server.InjectFault(new Fault(FaultKind.CloseMidReply, method));
        var backend = _live.NewBackend();
        var ex = Assert.Throws<QubesFirewallException>(() =>
        {
            switch (method)
            {
                case "admin.vm.List": backend.ListQubes(); break;
                case "admin.vm.firewall.Get": backend.GetFirewall(dest); break;
                default: backend.ReadProperties(global: false, dest); break;
            }
        });
        Assert.Equal("QubesdReplyTruncated", ex.ErrorId);
        Assert.Contains("closed in the middle of the reply", ex.Message);
    }

    [Fact]
    public void An_exception_reply_cut_short_is_reported()
    {
        var ex = Assert.Throws<QubesFirewallException>(() => QubesdClient.ParseReply("2\0QubesException\0\0half a mess"u8.ToArray(), "admin.vm.List", null, "dom0"));
        Assert.Equal("QubesdReplyTruncated", ex.ErrorId);
        var header = Assert.Throws<QubesFirewallException>(() => QubesdClient.ParseReply("0"u8.ToArray(), "admin.vm.List", null, "dom0"));
        Assert.Equal("QubesdReplyTruncated", header.ErrorId);
    }

    [Fact]
    public void Old_qubesd_format_arguments_are_put_into_the_message()
    {
        var ex = Assert.Throws<QubesdException>(() => QubesdClient.ParseReply("2\0QubesVMNotFoundError\0\0No such domain: %r\0'x'\0"u8.ToArray(), "admin.vm.List", null, "x"));
        Assert.Equal("No such domain: 'x'", ex.QubesdMessage);
    }

    [Fact]
    public void Other_reply_headers_are_protocol_errors()
    {
        Assert.Equal("QubesdBadReply", Assert.Throws<QubesFirewallException>(() => QubesdClient.ParseReply("1\0subject\0event\0\0"u8.ToArray(), "m", null, "d")).ErrorId);
        Assert.Equal("QubesdBadReply", Assert.Throws<QubesFirewallException>(() => QubesdClient.ParseReply("HTTP/1.1 200"u8.ToArray(), "m", null, "d")).ErrorId);
    }

    [Fact]
    public void A_request_over_64_KiB_is_refused_before_sending()
    {
        var payload = new byte[QubesdClient.MaxRequestBytes];
        var ex = Assert.Throws<QubesFirewallException>(() => Client.Call("admin.vm.feature.Set", "work", "big", payload));
        Assert.Equal("RequestTooLarge", ex.ErrorId);
        Assert.Contains("65,536", ex.Message);
        Assert.Empty(_live.Server.Calls);
        Assert.Equal(0, Client.CallCount);
    }

    [Fact]
    public void A_request_of_exactly_64_KiB_is_sent()
    {
        var header = QubesdClient.HeaderBytes("admin.vm.feature.Set", "big", "work");
        var payload = Enumerable.Repeat((byte)'a', QubesdClient.MaxRequestBytes - header).ToArray();
        Client.Call("admin.vm.feature.Set", "work", "big", payload);
        Assert.Equal(QubesdClient.MaxRequestBytes, Assert.Single(_live.Server.Calls).Raw.Length);
    }

    [Fact]
    public void The_server_aborts_an_oversized_request_as_qubesd_does()
    {
        using var socket = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        socket.Connect(new UnixDomainSocketEndPoint(_live.Server.SocketPath));
        var request = QubesdClient.FrameRequest("admin.vm.feature.Set", "big", "work", new byte[QubesdClient.MaxRequestBytes]);
        try
        {
            socket.Send(request);
            socket.Shutdown(SocketShutdown.Send);
        }
        catch (SocketException)
        {
            // the server may already have closed: that is the point
        }
        var reply = new byte[16];
        int n;
        try { n = socket.Receive(reply); } catch (SocketException) { n = 0; }
        Assert.Equal(0, n);
        Assert.Equal(1, _live.Server.OversizedRequests);
        Assert.Empty(_live.Server.Calls);
    }

    [Fact]
    public void No_socket_is_a_clear_connection_error()
    {
        var client = new QubesdClient(Path.Combine(_live.Directory, "missing.sock"));
        var ex = Assert.Throws<QubesFirewallException>(() => client.Call("admin.vm.List", "dom0"));
        Assert.Contains("Cannot connect to qubesd", ex.Message);
        Assert.True(ex.Kind is FailureKind.ResourceUnavailable or FailureKind.ConnectionError);
    }

    [Fact]
    public void Unknown_methods_are_refused_as_qubesd_of_each_release_does()
    {
        var r42 = Assert.Throws<QubesFirewallException>(() => Client.Call("admin.vm.NoSuchCall", "work"));
        Assert.Equal("QubesdEmptyReply", r42.ErrorId);
        _live.Server.ProtocolErrorsAsExceptions = true;
        var later = Assert.Throws<QubesdException>(() => Client.Call("admin.vm.NoSuchCall", "work"));
        Assert.Equal("QubesdProtocolError", later.ErrorId);
        Assert.Contains("no such method", later.Message);
    }

    [Fact]
    public void Each_call_is_reported_to_the_observer()
    {
        var seen = new List<QubesdCallRecord>();
        var client = new QubesdClient(_live.Server.SocketPath) { CallCompleted = seen.Add };
        client.Call("admin.vm.List", "dom0");
        Assert.Throws<QubesdException>(() => client.Call("admin.vm.List", "nosuch"));
        Assert.Equal(2, seen.Count);
        Assert.Null(seen[0].Failure);
        Assert.Equal("QubeNotFound", seen[1].Failure);
        Assert.Equal(Encoding.ASCII.GetByteCount("admin.vm.List+ dom0 name dom0") + 1, seen[0].RequestBytes);
    }
}

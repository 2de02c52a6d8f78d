using System.Globalization;
using System.Net.Sockets;
using System.Text;
using QubesFirewall.Engine.AdminApi;
using QubesFirewall.Engine.Model;

namespace QubesFirewall.Engine.Tests.AdminApi;

/// <summary>
/// qubesd reads at most 65,536 bytes per request (header and payload) and drops anything larger with an
/// empty reply. With rules of 60 bytes on the wire (59 characters and a newline) and the 38-byte header
/// of a Set on 'work', 1,091 rules fit and 1,092 do not: the stand-in qubesd takes the first and drops the
/// second when it arrives; the client refuses the second before sending, saying how many rules fit, and
/// nothing changes. (The general cases: AdminApiBackendTests.A_list_over_64_KiB_is_refused_before_sending_saying_how_many_rules_fit,
/// QubesdClientTests.A_request_of_exactly_64_KiB_is_sent and The_server_aborts_an_oversized_request_as_qubesd_does.)
/// </summary>
[System.Runtime.Versioning.UnsupportedOSPlatform("windows")]
public sealed class FirewallSizeLimitTests : IDisposable
{
    private readonly LiveQubesd _live = new();

    public void Dispose() => _live.Dispose();

    /// <summary>A valid rule whose text is exactly 59 characters (60 bytes with its newline in the payload).</summary>
    internal static FirewallRule Rule60(int i)
    {
        var text = string.Create(CultureInfo.InvariantCulture, $"action=accept dst4=10.{100 + i / 100}.{100 + i % 100}.1/32 comment=rule {i:D5} ");
        text += new string('x', 59 - text.Length);
        var rule = RuleText.Parse(text);
        Assert.Equal(text, rule.Text);
        return rule;
    }

    private const int Header = 38; // "admin.vm.firewall.Set+ dom0 name work" and its NUL

    [Fact]
    public void A_list_of_1091_rules_of_60_bytes_fits_one_Set_and_1092_do_not()
    {
        Assert.Equal(Header, QubesdClient.HeaderBytes("admin.vm.firewall.Set", null, "work"));
        var fit = (QubesdClient.MaxRequestBytes - Header) / 60;
        Assert.Equal(1091, fit);
        var rules = Enumerable.Range(0, fit + 1).Select(Rule60).ToList();
        Assert.All(rules, r => Assert.Equal(60, Encoding.ASCII.GetByteCount(r.Text) + 1));

        _live.Backend.SetFirewall("work", rules.Take(fit).ToList());
        var set = Assert.Single(_live.Server.Calls, c => c.Method == "admin.vm.firewall.Set");
        Assert.Equal(Header + fit * 60, set.Raw.Length);
        Assert.True(set.Raw.Length <= QubesdClient.MaxRequestBytes);
        Assert.Equal(rules.Take(fit).Select(r => r.Text), _live.Server.RuleLines("work"));
        Assert.Equal(0, _live.Server.OversizedRequests);

        _live.Server.ClearCalls();
        var ex = Assert.Throws<QubesFirewallException>(() => _live.Backend.SetFirewall("work", rules));
        Assert.Equal("FirewallRequestTooLarge", ex.ErrorId);
        Assert.Contains("The 1,092 rules of 'work' make a Set request of 65,558 bytes", ex.Message);
        Assert.Contains("only the first 1,091 of these rules would fit", ex.Message);
        Assert.Contains("Nothing was changed", ex.Message);
        Assert.Empty(_live.Server.Calls);
        Assert.Equal(rules.Take(fit).Select(r => r.Text), _live.Server.RuleLines("work"));
    }

    [Fact]
    public void The_stand_in_qubesd_drops_the_1092_rule_Set_with_an_empty_reply_and_keeps_the_old_list()
    {
        var before = _live.Server.RuleLines("work");
        var payload = AdminApiReplies.FirewallPayload(Enumerable.Range(0, 1092).Select(Rule60).ToList());
        var request = QubesdClient.FrameRequest("admin.vm.firewall.Set", null, "work", payload);
        Assert.Equal(65_558, request.Length);
        using var socket = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        socket.Connect(new UnixDomainSocketEndPoint(_live.Server.SocketPath));
        try
        {
            socket.Send(request);
            socket.Shutdown(SocketShutdown.Send);
        }
        catch (SocketException)
        {
            // qubesd (and the stand-in) may close before reading it all
        }
        var reply = new MemoryStream();
        var buffer = new byte[256];
        try
        {
            int n;
            while ((n = socket.Receive(buffer)) > 0) reply.Write(buffer, 0, n);
        }
        catch (SocketException)
        {
            // a reset is an empty reply too
        }
        Assert.Equal(0, reply.Length);
        Assert.Equal(1, _live.Server.OversizedRequests);
        Assert.Equal(before, _live.Server.RuleLines("work"));
    }
}

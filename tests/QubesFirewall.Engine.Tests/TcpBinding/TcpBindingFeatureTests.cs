using QubesFirewall.Engine.Model;

namespace QubesFirewall.Engine.Tests.ConnectTcp;

/// <summary>The declaration of a binding: names read from the right, the value grammar, strictness, validation.</summary>
public sealed class TcpBindingFeatureTests
{
    [Fact]
    public void A_binding_is_stored_under_its_target_and_port_with_a_canonical_value()
    {
        var b = TcpBinding.Create("untrusted", "mytcp-service", 444, 10444, permanent: true);
        Assert.Equal("qubesfirewall.tcp.mytcp-service.444", b.FeatureName);
        Assert.Equal("localport=10444 permanent=yes", b.FeatureValue);
        Assert.Equal("qubes.ConnectTCP+444", b.Call);
        Assert.Equal("qvm-connect-tcp 10444:@default:444", b.Command);
        Assert.Equal("localport=22 permanent=no", TcpBinding.Create("work", "personal", 22).FeatureValue);
    }

    [Theory]
    [InlineData("qubesfirewall.tcp.db.444", "db", 444)]
    [InlineData("qubesfirewall.tcp.my.db.qube.5432", "my.db.qube", 5432)]
    [InlineData("qubesfirewall.tcp.db.5.1", "db.5", 1)]
    [InlineData("qubesfirewall.tcp.a.65535", "a", 65535)]
    public void Names_are_read_from_the_right_so_targets_may_contain_dots(string name, string to, int port)
    {
        Assert.True(TcpBindingFeature.TryParseName(name, out var t, out var p));
        Assert.Equal((to, port), (t, p));
        var parsed = TcpBindingFeature.Parse("client", name, "localport=8000 permanent=no");
        Assert.Equal((to, port, 8000, false), (parsed.To, parsed.Port, parsed.LocalPort, parsed.Permanent));
        Assert.Equal(name, parsed.FeatureName);
    }

    [Theory]
    [InlineData("qubesfirewall.tcp.db")]
    [InlineData("qubesfirewall.tcp.444")]
    [InlineData("qubesfirewall.tcp..444")]
    [InlineData("qubesfirewall.tcp.db.")]
    [InlineData("qubesfirewall.tcp.db.0")]
    [InlineData("qubesfirewall.tcp.db.65536")]
    [InlineData("qubesfirewall.tcp.db.44a")]
    [InlineData("qubesfirewall.tcp.9db.444")]
    [InlineData("qubesfirewall.tcp.db-dm.444")]
    [InlineData("qubesfirewall.forward.tcp.444")]
    public void Bad_names_are_not_bindings(string name) =>
        Assert.False(TcpBindingFeature.TryParseName(name, out _, out _, lenient: true));

    [Fact]
    public void Leading_zeros_are_read_only_leniently()
    {
        Assert.False(TcpBindingFeature.TryParseName("qubesfirewall.tcp.db.0444", out _, out _));
        Assert.True(TcpBindingFeature.TryParseName("qubesfirewall.tcp.db.0444", out var to, out var port, lenient: true));
        Assert.Equal(("db", 444), (to, port));
    }

    [Fact]
    public void Either_key_order_is_read_and_the_canonical_one_written()
    {
        var b = TcpBindingFeature.Parse("untrusted", "qubesfirewall.tcp.work.444", "permanent=yes localport=10444");
        Assert.Equal("localport=10444 permanent=yes", b.FeatureValue);
    }

    [Theory]
    [InlineData("localport=10444")]
    [InlineData("permanent=yes")]
    [InlineData("localport=10444  permanent=yes")]
    [InlineData(" localport=10444 permanent=yes")]
    [InlineData("localport=10444 permanent=yes ")]
    [InlineData("localport=10444 permanent=yes localport=1")]
    [InlineData("localport=010444 permanent=yes")]
    [InlineData("localport=0 permanent=yes")]
    [InlineData("localport=65536 permanent=yes")]
    [InlineData("localport= permanent=yes")]
    [InlineData("localport=10444 permanent=true")]
    [InlineData("localport=10444 permanent")]
    [InlineData("localport=10444 permanent=yes comment=x")]
    [InlineData("")]
    public void Values_are_read_strictly(string value)
    {
        var ex = Assert.Throws<QubesFirewallException>(() => TcpBindingFeature.Parse("untrusted", "qubesfirewall.tcp.work.444", value));
        Assert.Equal("InvalidTcpBindingFeature", ex.ErrorId);
        Assert.Contains("qubesfirewall.tcp.work.444", ex.Message);
    }

    [Theory]
    [InlineData("dom0", "work", 444, "Dom0NotAllowed")]
    [InlineData("work", "dom0", 444, "Dom0NotAllowed")]
    [InlineData("work", "work", 444, "SameQube")]
    [InlineData("work", "bad name", 444, "InvalidQubeName")]
    [InlineData("work;rm", "db", 444, "InvalidQubeName")]
    [InlineData("work", "db", 0, "InvalidTcpBindingPort")]
    [InlineData("work", "db", 65536, "InvalidTcpBindingPort")]
    public void Bad_requests_are_refused(string from, string to, int port, string errorId) =>
        Assert.Equal(errorId, Assert.Throws<QubesFirewallException>(() => TcpBinding.Create(from, to, port)).ErrorId);

    [Fact]
    public void A_bad_local_port_is_refused() =>
        Assert.Equal("InvalidTcpBindingPort", Assert.Throws<QubesFirewallException>(() => TcpBinding.Create("work", "db", 80, 70000, true)).ErrorId);

    [Fact]
    public void Every_valid_binding_round_trips_through_its_feature()
    {
        var rng = new Random(4711);
        const string first = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
        const string rest = first + "0123456789_.-";
        string Name()
        {
            while (true)
            {
                var len = rng.Next(1, 31);
                var chars = new char[len];
                chars[0] = first[rng.Next(first.Length)];
                for (var i = 1; i < len; i++) chars[i] = rest[rng.Next(rest.Length)];
                var s = new string(chars);
                if (Validation.QubeName.IsValid(s)) return s;
            }
        }
        for (var i = 0; i < 2000; i++)
        {
            var from = Name();
            var to = Name();
            if (from == to) continue;
            var b = TcpBinding.Create(from, to, rng.Next(1, 65536), rng.Next(1, 65536), rng.Next(2) == 0);
            var back = TcpBindingFeature.Parse(from, b.FeatureName, b.FeatureValue);
            Assert.Equal(b, back);
        }
    }
}

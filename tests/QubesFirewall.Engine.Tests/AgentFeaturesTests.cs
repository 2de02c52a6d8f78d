using System.Globalization;
using QubesFirewall.Engine.Agent;
using QubesFirewall.Engine.Model;

namespace QubesFirewall.Engine.Tests;

/// <summary>The per-qube vm-config.qubesfw.* features derived from the declarations, the calls that deliver them, and their limits.</summary>
public sealed class AgentFeaturesTests
{
    private static Dictionary<string, string> Declared(params PortForward[] forwards) =>
        forwards.ToDictionary(f => f.FeatureName, f => f.FeatureValue, StringComparer.Ordinal);

    private static QubesInventory Standard(IDictionary<string, string>? workFeatures = null, IDictionary<string, string>? personalFeatures = null) =>
        new QubesXmlBuilder()
            .Qube("sys-net", 2, null, providesNetwork: true)
            .Qube("sys-firewall", 3, "sys-net", providesNetwork: true)
            .Qube("personal", 10, "sys-firewall", features: personalFeatures)
            .Qube("work", 11, "sys-firewall", features: workFeatures)
            .Qube("vault", 13, null)
            .Inventory();

    [Fact]
    public void A_forward_gives_each_qube_on_its_way_one_complete_key_naming_it_and_a_gen_key_counting_them()
    {
        var inv = Standard(Declared(PortForward.Create("work", ForwardProtocol.Tcp, 443, 8443, allowFrom: ["192.168.1.0/24", "10.0.0.5"], expire: 1900000000)));
        var keys = AgentFeatures.DeriveAll(inv);

        var net = keys["sys-net"];
        var hop = Assert.Single(net.Data);
        Assert.Matches("^vm-config\\.qubesfw\\.hop4\\.00443\\.tcp\\.[0-9a-f]{10}$", hop.Feature);
        Assert.Equal($"for=sys-net gen={net.Generation} proto=tcp port=443 to=443 in=out nat=10.137.0.3 dst=local src=192.168.1.0/24,10.0.0.5 exp=1900000000 vm=work", hop.Value);
        Assert.Equal(new AgentKey("vm-config.qubesfw.gen", $"for=sys-net gen={net.Generation} keys=1"), net.Gen);
        Assert.Matches("^[0-9a-f]{16}$", net.Generation);

        var fw = Assert.Single(keys["sys-firewall"].Data);
        Assert.Equal($"for=sys-firewall gen={keys["sys-firewall"].Generation} proto=tcp port=443 to=8443 in=up nat=10.137.0.11 dst=10.137.0.3 src=192.168.1.0/24,10.0.0.5 exp=1900000000 vm=work", fw.Value);
        var target = Assert.Single(keys["work"].Data);
        Assert.StartsWith("vm-config.qubesfw.tgt4.00443.tcp.", target.Feature, StringComparison.Ordinal);
        Assert.Equal($"for=work gen={keys["work"].Generation} proto=tcp port=443 to=8443 dst=10.137.0.11 src=192.168.1.0/24,10.0.0.5 exp=1900000000 vm=work", target.Value);
        Assert.True(keys["personal"].IsEmpty);
        Assert.Null(keys["vault"].Gen);
        // each qube's set has its own generation
        Assert.Equal(3, new[] { "sys-net", "sys-firewall", "work" }.Select(q => keys[q].Generation).Distinct().Count());
    }

    [Fact]
    public void Any_source_is_said_and_a_family_without_allowed_sources_gets_no_key_at_all()
    {
        var v6 = new Dictionary<string, string> { ["ipv6"] = "1" };
        var inv = new QubesXmlBuilder()
            .Qube("sys-net", 2, null, providesNetwork: true, features: v6)
            .Qube("sys-firewall", 3, "sys-net", providesNetwork: true)
            .Qube("work", 11, "sys-firewall", features: Declared(
                PortForward.Create("work", ForwardProtocol.Udp, 53),
                PortForward.Create("work", ForwardProtocol.Tcp, 22, allowFrom: ["192.168.1.0/24"])))
            .Inventory();
        var net = AgentFeatures.DeriveAll(inv)["sys-net"];
        Assert.Equal(["hop4.00022.tcp", "hop4.00053.udp", "hop6.00053.udp"], net.Data.Select(k => k.Feature["vm-config.qubesfw.".Length..^11]));
        Assert.Contains(" src=any ", net.Data[1].Value, StringComparison.Ordinal);
        Assert.Contains(" src=any ", net.Data[2].Value, StringComparison.Ordinal);
        Assert.DoesNotContain(net.Data, k => k.Feature.Contains("hop6.00022", StringComparison.Ordinal)); // IPv4 sources only: no IPv6 rule, never "anyone"
        Assert.Contains(" nat=fd09:24ef:4179::a89:3 dst=local ", net.Data[2].Value, StringComparison.Ordinal);
    }

    [Fact]
    public void A_link_gives_its_network_qube_and_its_destination_a_key_each()
    {
        var link = InterVmLink.Create("work", "personal", ForwardProtocol.Tcp, new LinkPorts(5432, 5440));
        var inv = Standard(new Dictionary<string, string> { [link.FeatureName] = "1" });
        var keys = AgentFeatures.DeriveAll(inv);
        var net = Assert.Single(keys["sys-firewall"].Data);
        Assert.Matches("^vm-config\\.qubesfw\\.lnet4\\.[0-9a-f]{12}$", net.Feature);
        Assert.Equal($"for=sys-firewall gen={keys["sys-firewall"].Generation} proto=tcp ports=5432-5440 src=10.137.0.11 dst=10.137.0.10 from=work vm=personal", net.Value);
        var dst = Assert.Single(keys["personal"].Data);
        Assert.StartsWith("vm-config.qubesfw.ldst4.", dst.Feature, StringComparison.Ordinal);
        Assert.True(keys["work"].IsEmpty);
        Assert.True(keys["sys-net"].IsEmpty);
    }

    [Fact]
    public void Changes_set_data_then_remove_strays_then_set_gen_last_and_an_unchanged_plan_sets_nothing()
    {
        var first = Standard(Declared(PortForward.Create("work", ForwardProtocol.Tcp, 443)));
        var keys = AgentFeatures.DeriveAll(first);
        var changes = AgentFeatures.Changes(first, keys);
        foreach (var qube in new[] { "sys-net", "sys-firewall", "work" })
        {
            var mine = changes.Where(c => c.VMName == qube).ToList();
            Assert.Equal(2, mine.Count);
            Assert.Equal(AgentFeatures.GenFeature, mine[^1].Feature);
            Assert.All(mine, c => Assert.Null(c.Previous));
        }

        // once delivered, the same declarations set nothing
        var delivered = WithAgentFeatures(first, keys, "work");
        Assert.Empty(AgentFeatures.Changes(delivered, AgentFeatures.DeriveAll(delivered)));

        // another port replaces the key: new key set, old one removed as a stray, gen last
        var moved = WithAgentFeatures(Standard(Declared(PortForward.Create("work", ForwardProtocol.Tcp, 8443))), keys, "work");
        var next = AgentFeatures.Changes(moved, AgentFeatures.DeriveAll(moved)).Where(c => c.VMName == "sys-net").ToList();
        Assert.Equal(3, next.Count);
        Assert.Contains("hop4.08443.tcp", next[0].Feature, StringComparison.Ordinal);
        Assert.True(next[1].IsRemove);
        Assert.Contains("hop4.00443.tcp", next[1].Feature, StringComparison.Ordinal);
        Assert.Equal((AgentFeatures.GenFeature, false), (next[2].Feature, next[2].IsRemove));

        // nothing left: gen removed first (the agent then refuses what it sees), then the data keys
        var gone = WithAgentFeatures(Standard(), keys, "work");
        var last = AgentFeatures.Changes(gone, AgentFeatures.DeriveAll(gone)).Where(c => c.VMName == "sys-net").ToList();
        Assert.Equal([AgentFeatures.GenFeature, keys["sys-net"].Data[0].Feature], last.Select(c => c.Feature));
        Assert.All(last, c => Assert.True(c.IsRemove));
    }

    [Fact]
    public void A_key_edited_by_hand_is_set_back_and_gen_rewritten_after_it()
    {
        var inv = Standard(Declared(PortForward.Create("work", ForwardProtocol.Tcp, 443)));
        var keys = AgentFeatures.DeriveAll(inv);
        var delivered = WithAgentFeatures(inv, keys, "work");
        var net = delivered.Get("sys-net");
        var edited = new Dictionary<string, string>(net.Features) { [keys["sys-net"].Data[0].Feature] = "for=sys-net gen=0 proto=tcp" };
        var changes = AgentFeatures.Changes(net with { Features = edited }, keys["sys-net"]);
        Assert.Equal([keys["sys-net"].Data[0].Feature, AgentFeatures.GenFeature], changes.Select(c => c.Feature));
    }

    // The inventory as qubesd has it after the keys of every qube were set (the declarations of the given qube kept).
    private static QubesInventory WithAgentFeatures(QubesInventory inventory, IReadOnlyDictionary<string, QubeAgentKeys> keys, string _)
    {
        var qubes = inventory.Qubes.Select(q =>
        {
            var features = new Dictionary<string, string>(q.Features.Where(f => !AgentFeatures.IsAgentFeature(f.Key)), StringComparer.Ordinal);
            if (keys.TryGetValue(q.Name, out var k)) foreach (var key in k.All) features[key.Feature] = key.Value;
            return q with { Features = features };
        }).ToList();
        return new QubesInventory(qubes, inventory.GlobalProperties, inventory.Labels);
    }

    [Fact]
    public void Names_and_values_keep_to_qubesdb_limits_for_the_longest_inputs_the_cmdlets_accept()
    {
        // the longest qube names (31), an IPv6 chain, 64 IPv6 networks of the longest text, the longest interface and expiry
        var net = "n" + new string('x', 30);
        var fw = "f" + new string('y', 29) + "Z";
        var target = "T" + new string('w', 29) + "9";
        var peer = "p" + new string('q', 29) + "-";
        var sources = Enumerable.Range(0, PortForward.MaxAllowFrom)
            .Select(i => $"fffe:fffd:fffc:fffb:fffa:fff9:fff8:{(0xa000 + i * 2).ToString("x4", CultureInfo.InvariantCulture)}/127").ToArray();
        var checkedKeys = 0;
        var longest = 0;
        foreach (var protocol in new[] { ForwardProtocol.Tcp, ForwardProtocol.Udp })
        {
            foreach (var (type, iface) in new[] { (ForwardType.External, "abcdefghijklmno"), (ForwardType.External, (string?)null), (ForwardType.Internal, "abcdefghijklmno"), (ForwardType.Internal, null) })
            {
                var forward = PortForward.Create(target, protocol, 65535, 65534, type, sources, iface, 253402300799, new string('c', PortForward.MaxCommentLength));
                var link = InterVmLink.Create(target, peer, protocol, new LinkPorts(65534, 65535));
                var linkBack = InterVmLink.Create(peer, target, protocol, LinkPorts.All);
                var v6 = new Dictionary<string, string> { ["ipv6"] = "1" };
                var inv = new QubesXmlBuilder()
                    .Qube(net, 2, null, providesNetwork: true, features: v6)
                    .Qube(fw, 3, net, providesNetwork: true)
                    .Qube(target, 250, fw, features: new Dictionary<string, string> { [forward.FeatureName] = forward.FeatureValue, [link.FeatureName] = "1" })
                    .Qube(peer, 251, fw, features: new Dictionary<string, string> { [linkBack.FeatureName] = "1" })
                    .Inventory();
                var keys = AgentFeatures.DeriveAll(inv);
                foreach (var key in keys.Values.SelectMany(k => k.All))
                {
                    var name = key.Feature["vm-config.".Length..];
                    Assert.InRange(name.Length, 1, AgentFeatures.MaxNameBytes);
                    Assert.Matches("^[a-z][a-z0-9._-]*$", name);
                    Assert.InRange(key.Value.Length, 1, AgentFeatures.MaxValueBytes);
                    Assert.All(key.Value, c => Assert.InRange(c, ' ', '~'));
                    checkedKeys++;
                }
                // a part too long for one value is split into several keys, one rule each: together they allow exactly the sources
                var hop6 = keys[fw].Data.Where(k => k.Feature.Contains(".hop6.", StringComparison.Ordinal)).ToList();
                longest = Math.Max(longest, keys.Values.SelectMany(k => k.All).Max(k => k.Value.Length));
                var allowed = hop6.SelectMany(k => k.Value.Split(' ').Single(w => w.StartsWith("src=", StringComparison.Ordinal))[4..].Split(',')).ToList();
                Assert.Equal(sources, allowed);
            }
        }
        Assert.True(checkedKeys > 100, $"{checkedKeys} keys checked");
        Assert.True(longest > 2900, $"the longest value is {longest} bytes: the inputs are not the longest");
    }

    [Fact]
    public void Sources_that_do_not_fit_one_value_are_split_into_halves_that_each_fit()
    {
        var sources = Enumerable.Range(0, 64).Select(i => $"2001:db8:{i.ToString("x4", CultureInfo.InvariantCulture)}:ffff:ffff:ffff:ffff:fffe/127").ToList();
        Assert.Single(AgentFeatures.SplitSources(sources, 100));
        Assert.Single(AgentFeatures.SplitSources(null, 3000));
        var parts = AgentFeatures.SplitSources(sources, 600);
        Assert.Equal(2, parts.Count);
        Assert.Equal(sources, parts.SelectMany(p => p!));
        Assert.All(parts, p => Assert.True(600 + string.Join(",", p!).Length <= AgentFeatures.MaxValueBytes));
        Assert.Equal(4, AgentFeatures.SplitSources(sources, 2000).Count);
    }

    [Fact]
    public void Validate_refuses_names_and_values_qubesdb_cannot_hold()
    {
        AgentFeatures.Validate("vm-config.qubesfw.gen", "for=a gen=b keys=1");
        foreach (var (name, value) in new[]
        {
            ("vm-config.qubesfw." + new string('a', 45), "x"), // 53 bytes after vm-config.
            ("vm-config.qubesfw.Hop4", "x"), // QubesDB refuses upper-case letters in paths
            ("vm-config.other", "x"),
            ("vm-config.qubesfw.gen", new string('v', 3073)),
            ("vm-config.qubesfw.gen", "tab\there"),
        })
        {
            var ex = Assert.Throws<QubesFirewallException>(() => AgentFeatures.Validate(name, value));
            Assert.Equal("InvalidAgentKey", ex.ErrorId);
        }
    }
}

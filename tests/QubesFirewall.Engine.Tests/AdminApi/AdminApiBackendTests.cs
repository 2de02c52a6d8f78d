using System.Text;
using QubesFirewall.Engine.AdminApi;
using QubesFirewall.Engine.Backends;
using QubesFirewall.Engine.Formats;
using QubesFirewall.Engine.Model;
using QubesFirewall.Engine.Planning;
using QubesFirewall.TestQubesd;

namespace QubesFirewall.Engine.Tests.AdminApi;

/// <summary>The live backend against the stand-in qubesd seeded from the sample root.</summary>
[System.Runtime.Versioning.UnsupportedOSPlatform("windows")]
public sealed class AdminApiBackendTests : IDisposable
{
    private readonly LiveQubesd _live = new();

    public void Dispose() => _live.Dispose();

    private AdminApiBackend Backend => _live.Backend;
    private FakeQubesd Server => _live.Server;

    private static string Raw(RecordedCall c) => Encoding.ASCII.GetString(c.Raw);

    // ------------------------------------------------------------------ inventory

    public static TheoryData<bool> GetAllSupport => new() { true, false };

    [Theory]
    [MemberData(nameof(GetAllSupport))]
    public void The_inventory_equals_the_offline_roots_for_the_same_system(bool getAll)
    {
        Server.SupportsGetAll = getAll;
        var offline = new OfflineRoot(_live.Root).GetInventory();
        var live = Backend.GetInventory();
        Assert.Equal(offline.Qubes.Select(q => q.Name), live.Qubes.Select(q => q.Name));
        foreach (var (o, l) in offline.Qubes.Zip(live.Qubes))
        {
            // Records compare collections by reference: compare their content, then the rest.
            Assert.Equal(o.Features.OrderBy(f => f.Key), l.Features.OrderBy(f => f.Key));
            Assert.Equal(o.Properties.OrderBy(f => f.Key), l.Properties.OrderBy(f => f.Key));
            Assert.Equal(o.Tags, l.Tags);
            Assert.Equal(o with { Features = l.Features, Properties = l.Properties, Tags = l.Tags }, l);
        }
        Assert.Equal(offline.GlobalProperties.OrderBy(p => p.Key), live.GlobalProperties.OrderBy(p => p.Key));
        Assert.Equal(offline.Labels.OrderBy(p => p.Key), live.Labels.OrderBy(p => p.Key));
        Assert.Equal(offline.DefaultNetVM, live.DefaultNetVM);
    }

    [Fact]
    public void The_inventory_costs_one_list_and_one_getall_per_qube_looked_at_once_per_backend()
    {
        // A plan on one qube reads the list and that qube.
        Assert.Equal("sys-firewall", Backend.GetInventory().Get("work").NetVM);
        Assert.Equal(["admin.vm.List dom0", "admin.vm.property.GetAll work"], Server.Calls.Select(c => $"{c.Method} {c.Destination}"));
        // A listing reads every other qube once; the global properties only when someone reads them.
        var qubes = Backend.GetInventory().Qubes.Count;
        Backend.GetInventory();
        Backend.GetInventory().Find("work");
        Assert.Equal(qubes + 1, Server.Calls.Count);
        Assert.Equal(1, Server.CountCalls("admin.vm.List"));
        Assert.Equal(0, Server.CountCalls("admin.property.GetAll"));
        Assert.Equal(qubes, Server.CountCalls("admin.vm.property.GetAll"));
        Assert.Equal("sys-firewall", Backend.GetInventory().DefaultNetVM);
        Assert.Equal(1, Server.CountCalls("admin.property.GetAll"));
        // Features are read when first looked at: one List and one Get per feature, for that qube only.
        var features = Backend.GetInventory().Get("sys-firewall").Features;
        Assert.Equal("1", features["servicevm"]);
        Assert.Equal(qubes + 2 + 1 + features.Count, Server.Calls.Count);
    }

    [Fact]
    public void A_feature_looked_up_by_name_is_read_after_the_names_and_only_when_the_qube_has_it()
    {
        var work = Backend.GetInventory().Get("work");
        Server.ClearCalls();
        // The names first: one List answers every feature the qube lacks, however many are asked.
        Assert.False(work.Features.TryGetValue("whonix-gw", out _));
        Assert.False(work.Features.TryGetValue("whonix-gw", out _)); // read once
        Assert.False(work.Features.TryGetValue("qubes-agent-version", out _));
        Assert.Equal(["admin.vm.feature.List work"], Server.Calls.Select(c => $"{c.Key} {c.Destination}"));
        // A feature it has: one Get, once.
        var sysNet = Backend.GetInventory().Get("sys-net");
        Server.ClearCalls();
        Assert.Equal("1", sysNet.Features["servicevm"]);
        Assert.Equal("1", sysNet.Features["servicevm"]);
        Assert.Equal(["admin.vm.feature.List sys-net", "admin.vm.feature.Get+servicevm sys-net"], Server.Calls.Select(c => $"{c.Key} {c.Destination}"));
        // Declarations look at the names, then read only the values of those that match.
        var firewall = Backend.GetInventory().Get("sys-firewall");
        Server.ClearCalls();
        Assert.Empty(firewall.FeaturesNamed(n => n.StartsWith("qubesfirewall.forward.", StringComparison.Ordinal)));
        Assert.Equal(["admin.vm.feature.List sys-firewall"], Server.Calls.Select(c => $"{c.Key} {c.Destination}"));
        // Enumerating reads each value once.
        Server.ClearCalls();
        var all = firewall.Features.ToList();
        Assert.Equal(Server.CountCalls("admin.vm.feature.Get", "sys-firewall"), all.Count);
        Assert.Equal(all.Select(f => f.Key).Order(StringComparer.Ordinal), firewall.FeaturesNamed(_ => true).Select(f => f.Key));
        Assert.Equal(new OfflineRoot(_live.Root).GetInventory().Get("sys-firewall").Features.OrderBy(f => f.Key), all.OrderBy(f => f.Key));
        Assert.Equal(0, Server.CountCalls("admin.vm.feature.List"));
    }

    [Fact]
    public void Every_qubes_features_can_be_looked_at_without_reading_its_properties()
    {
        var inventory = Backend.GetInventory();
        Server.ClearCalls();
        var glance = inventory.Glance("sys-net")!;
        Assert.Equal(QubeClass.AppVM, glance.Class);
        Assert.Contains("servicevm", glance.Features.Keys);
        Assert.Equal(["admin.vm.feature.List sys-net"], Server.Calls.Select(c => $"{c.Key} {c.Destination}"));
        // the qube, once loaded, shares what was read
        Assert.Equal("1", inventory.Get("sys-net").Features["servicevm"]);
        Assert.Equal(["admin.vm.feature.List sys-net", "admin.vm.property.GetAll sys-net", "admin.vm.feature.Get+servicevm sys-net"],
            Server.Calls.Select(c => $"{c.Key} {c.Destination}"));
        Assert.Equal(QubeClass.AdminVM, inventory.Glance("dom0")!.Class);
        Assert.Null(inventory.Glance("no-such-qube"));
    }

    [Fact]
    public void The_modules_own_features_it_wrote_are_known_without_reading_them_again_any_other_feature_reads_all_again()
    {
        var inventory = Backend.GetInventory();
        Assert.False(inventory.Get("work").Features.ContainsKey("qubesfirewall.forward.tcp.9000"));
        Backend.SetFeature("work", "qubesfirewall.forward.tcp.9000", "1700000000");
        Backend.SetFeature("work", "vm-config.qubesfw.gen", "for=work gen=0123456789abcdef keys=0");
        Server.ClearCalls();
        Assert.Same(inventory, Backend.GetInventory());
        Assert.Equal("1700000000", inventory.Get("work").Features["qubesfirewall.forward.tcp.9000"]);
        Assert.Contains("vm-config.qubesfw.gen", inventory.Get("work").Features.Keys);
        Assert.True(Backend.RemoveFeature("work", "vm-config.qubesfw.gen"));
        Assert.DoesNotContain("vm-config.qubesfw.gen", inventory.Get("work").Features.Keys);
        Assert.Equal(["admin.vm.feature.Remove+vm-config.qubesfw.gen work"], Server.Calls.Select(c => $"{c.Key} {c.Destination}"));
        // what qubesd stores is what the cache says
        Assert.Equal("1700000000", new OfflineRoot(_live.Root).GetInventory().Get("work").Features["qubesfirewall.forward.tcp.9000"]);
        // ipv6 changes what qubesd computes (addresses of the qube and its clients): the next look reads everything again
        Backend.SetFeature("work", "ipv6", "1");
        Assert.NotSame(inventory, Backend.GetInventory());
    }

    [Fact]
    public void The_stand_in_qubesd_models_qubesds_one_loop_and_the_connection_latency()
    {
        Server.ServiceTime = TimeSpan.FromMilliseconds(150);
        var watch = System.Diagnostics.Stopwatch.StartNew();
        // Three calls at once: qubesd handles one at a time, so they take three service times, not one.
        Parallel.For(0, 3, _ => new QubesdClient(Server.SocketPath).CallText("admin.vm.List", "dom0"));
        Assert.True(watch.Elapsed >= TimeSpan.FromMilliseconds(3 * 150 - 10), $"three overlapping calls took {watch.ElapsedMilliseconds} ms");
        Server.ServiceTime = TimeSpan.Zero;
        Server.ConnectionLatency = TimeSpan.FromMilliseconds(200);
        watch.Restart();
        new QubesdClient(Server.SocketPath).CallText("admin.vm.List", "dom0");
        Assert.True(watch.Elapsed >= TimeSpan.FromMilliseconds(190), $"a call with 200 ms of latency took {watch.ElapsedMilliseconds} ms");
    }

    [Fact]
    public void Without_getall_each_property_is_read_with_get()
    {
        Server.SupportsGetAll = false;
        _ = Backend.GetInventory().Qubes;
        _ = Backend.GetInventory().GlobalProperties.Count;
        Assert.Equal(1, Server.CountCalls("admin.vm.property.GetAll")); // tried once, then never again
        Assert.Equal(0, Server.CountCalls("admin.property.GetAll"));
        Assert.True(Server.CountCalls("admin.property.Get") > 0);
        Assert.True(Server.CountCalls("admin.vm.property.Get") > 16);
        Assert.Contains(Server.Calls, c => Raw(c) == "admin.vm.property.Get+netvm dom0 name work\0");
        Assert.Equal("sys-firewall", Backend.GetInventory().Get("work").NetVM);
    }

    [Fact]
    public void Power_states_come_from_the_list()
    {
        var inventory = Backend.GetInventory();
        Assert.Equal(PowerState.Running, inventory.Get("work").State);
        Assert.Equal(PowerState.Halted, inventory.Get("untrusted").State);
        Assert.Equal(PowerState.Running, inventory.Get("sys-firewall").State);
    }

    [Fact]
    public void The_list_of_R43_with_uuids_is_read_too()
    {
        Server.ListWithUuid = true;
        Assert.Contains(" uuid=", Backend.Client.CallText("admin.vm.List", "work"));
        Assert.Equal("work", Backend.ReadListEntry("work").Name);
        Assert.Equal(new OfflineRoot(_live.Root).GetInventory().Qubes.Count, Backend.GetInventory().Qubes.Count);
    }

    [Theory]
    [InlineData("work class=AppVM\n")]
    [InlineData("work class=AppVM state=Running\nhalf")]
    [InlineData("work state=Running class=AppVM class=X\n")]
    [InlineData("1work class=AppVM state=Running\n")]
    public void A_list_reply_of_another_shape_is_refused(string content)
    {
        var ex = Assert.ThrowsAny<QubesFirewallException>(() => AdminApiReplies.ParseVmList(content, "admin.vm.List"));
        Assert.True(ex.ErrorId is "QubesdBadReply" or "QubesdReplyTruncated");
    }

    [Fact]
    public void Getall_lines_are_unescaped_and_checked()
    {
        var props = AdminApiReplies.ParseGetAll("kernelopts default=False type=str a\\\\b\\nc d\nnetvm default=True type=vm \n", "x");
        Assert.Equal("a\\b\nc d", props["kernelopts"].Value);
        Assert.True(props["netvm"].IsDefault);
        Assert.Equal("", props["netvm"].Value);
        Assert.Throws<QubesFirewallException>(() => AdminApiReplies.ParseGetAll("netvm default=Maybe type=vm x\n", "x"));
        Assert.Throws<QubesFirewallException>(() => AdminApiReplies.ParseGetAll("netvm default=True type=vm x\\q\n", "x"));
        Assert.Throws<QubesFirewallException>(() => AdminApiReplies.ParseGetAll("netvm default=True type=vm x", "x"));
    }

    // ------------------------------------------------------------------ firewall

    [Fact]
    public void Get_returns_the_rules_the_offline_root_reads()
    {
        var offline = new OfflineRoot(_live.Root);
        foreach (var vm in new[] { "work", "personal", "untrusted" })
            Assert.Equal(offline.GetFirewall(vm).Rules.Select(r => r.Text), Backend.GetFirewall(vm).Rules.Select(r => r.Text));
        Assert.Equal("admin.vm.firewall.Get+ dom0 name work\0", Raw(Server.Calls[0]));
    }

    [Fact]
    public void An_edit_is_one_get_one_reread_and_one_set_whatever_the_count()
    {
        var now = DateTimeOffset.UtcNow;
        var insertions = Enumerable.Range(1, 20).Select(i => new RuleInsertion(RuleText.Parse($"action=accept dst4=10.99.0.{i} proto=tcp dstports=443"))).ToList();
        var change = FirewallPlanner.PlanInsert(Backend, "work", insertions, now);
        change.Apply(Backend);
        Assert.Equal(["admin.vm.firewall.Get", "admin.vm.firewall.Get", "admin.vm.firewall.Set"], Server.Calls.Select(c => c.Method));
        var set = Server.Calls[2];
        var expected = string.Concat(change.Preview.Rules.Select(r => r.Text + "\n"));
        Assert.Equal("admin.vm.firewall.Set+ dom0 name work\0" + expected, Raw(set));
        Assert.Equal(change.Preview.Rules.Select(r => r.Text), Server.RuleLines("work"));
        Assert.Equal("action=drop", Server.RuleLines("work")[^1]);
        // qubesd wrote firewall.xml: the offline root sees the same list.
        Assert.Equal(Server.RuleLines("work"), new OfflineRoot(_live.Root).GetFirewall("work").Rules.Select(r => r.Text));
    }

    [Fact]
    public void Dom0_has_no_firewall_and_nothing_is_asked()
    {
        Assert.Equal("NoFirewall", Assert.Throws<QubesFirewallException>(() => Backend.GetFirewall("dom0")).ErrorId);
        Assert.Empty(Server.Calls);
    }

    [Fact]
    public void Nothing_is_set_when_every_rule_is_already_there()
    {
        var now = DateTimeOffset.UtcNow;
        var existing = Backend.GetFirewall("work").Rules[2];
        FirewallPlanner.PlanInsert(Backend, "work", [new RuleInsertion(existing)], now).Apply(Backend);
        Assert.Equal(0, Server.CountCalls("admin.vm.firewall.Set"));
    }

    [Fact]
    public void A_change_made_by_someone_else_between_plan_and_reread_is_refused()
    {
        var now = DateTimeOffset.UtcNow;
        var change = FirewallPlanner.PlanInsert(Backend, "work", [new RuleInsertion(RuleText.Parse("action=accept dst4=10.99.0.1"))], now);
        // Another admin adds a rule after this plan was made.
        Server.EditRules("work", rules => { rules.Insert(0, "action=drop dst4=192.0.2.66"); return rules; });
        var before = Server.RuleLines("work");
        var ex = Assert.Throws<QubesFirewallException>(() => change.Apply(Backend));
        Assert.Equal("FirewallChangedSinceRead", ex.ErrorId);
        Assert.Contains("192.0.2.66", ex.Message);
        Assert.Contains("Nothing was changed", ex.Message);
        Assert.Equal(before, Server.RuleLines("work"));
        Assert.Equal(0, Server.CountCalls("admin.vm.firewall.Set"));
    }

    [Fact]
    public void An_invalid_set_line_gets_an_empty_reply_as_from_qubesd()
    {
        var ex = Assert.Throws<QubesFirewallException>(() => Backend.Client.Call("admin.vm.firewall.Set", "work", payload: "action=accept dsthost=1.2.3.4/33\n"u8));
        Assert.Equal("QubesdEmptyReply", ex.ErrorId);
        Assert.Equal(new OfflineRoot(_live.Root).GetFirewall("work").Rules.Select(r => r.Text), Server.RuleLines("work"));
    }

    [Fact]
    public void A_list_over_64_KiB_is_refused_before_sending_saying_how_many_rules_fit()
    {
        var rules = Enumerable.Range(0, 1200)
            .Select(i => RuleText.Parse($"action=accept dst4=10.{i / 250}.{i % 250}.1/32 proto=tcp dstports=1000-2000 comment=rule number {i} of a long list"))
            .Append(RuleText.Parse("action=drop")).ToList();
        var ex = Assert.Throws<QubesFirewallException>(() => Backend.SetFirewall("work", rules));
        Assert.Equal("FirewallRequestTooLarge", ex.ErrorId);
        var header = QubesdClient.HeaderBytes("admin.vm.firewall.Set", null, "work");
        var fit = 0;
        for (var size = header; fit < rules.Count && (size += rules[fit].Text.Length + 1) <= QubesdClient.MaxRequestBytes;) fit++;
        Assert.Contains($"only the first {fit:N0} of these rules would fit", ex.Message);
        Assert.Empty(Server.Calls);
        // ... and exactly that many go through.
        Backend.SetFirewall("work", rules.Take(fit).ToList());
        Assert.Equal(fit, Server.RuleLines("work").Count);
    }

    [Fact]
    public void An_empty_list_cannot_be_set()
    {
        var ex = Assert.Throws<QubesFirewallException>(() => Backend.SetFirewall("work", []));
        Assert.Equal("EmptyRuleList", ex.ErrorId);
        Assert.Empty(Server.Calls);
    }

    [Fact]
    public void Get_lines_of_another_shape_are_refused_and_odd_values_kept_with_their_problems()
    {
        var doc = AdminApiReplies.ParseFirewall("action=accept dsthost=1.2.3.999 proto=tcp dstports=80-80 comment=a b=c\naction=drop\n", "x");
        Assert.Equal(2, doc.Rules.Count);
        Assert.NotEmpty(doc.Rules[0].Problems);
        Assert.Equal("a b=c", doc.Rules[0].Comment);
        Assert.Throws<QubesFirewallException>(() => AdminApiReplies.ParseFirewall("action=accept forward=1\n", "x"));
        Assert.Throws<QubesFirewallException>(() => AdminApiReplies.ParseFirewall("action=accept\naction=dr", "x"));
        Assert.Throws<QubesFirewallException>(() => AdminApiReplies.ParseFirewall("proto=tcp\n", "x"));
    }

    [Fact]
    public void Sync_reloads_and_returns_what_the_offline_root_renders()
    {
        var entries = Backend.SyncFirewall("work");
        Assert.Single(Server.Calls, c => Raw(c) == "admin.vm.firewall.Reload+ dom0 name work\0");
        Assert.All(entries, e => Assert.True(e.Rendered));
        var offline = new OfflineRoot(_live.Root).SyncFirewall("work");
        Assert.Equal(offline.Select(e => e.ToString()), entries.Select(e => e.ToString()));
        // The stand-in wrote what qubesd would write into sys-firewall's QubesDB.
        var ip = Backend.GetInventory().Get("work").IP!;
        var stored = new OfflineRoot(_live.Root).ReadQubesDb("sys-firewall")
            .Where(e => e.Path == $"/qubes-firewall/{ip}" || e.Path.StartsWith($"/qubes-firewall/{ip}/", StringComparison.Ordinal))
            .Select(e => (e.Path, e.Value)).Order();
        Assert.Equal(entries.Select(e => (e.Path, e.Value)).Order(), stored);
    }

    [Fact]
    public void Sync_of_a_qube_without_netvm_is_refused_without_a_reload()
    {
        Assert.Equal("NoNetVM", Assert.Throws<QubesFirewallException>(() => Backend.SyncFirewall("vault")).ErrorId);
        Assert.Equal(0, Server.CountCalls("admin.vm.firewall.Reload"));
    }

    // ------------------------------------------------------------------ features, properties, power

    [Fact]
    public void Features_are_set_read_and_removed_through_the_api()
    {
        Backend.SetFeature("work", "qubesfirewall.forward.web", "tcp 8080 from 0.0.0.0/0");
        Assert.Equal("admin.vm.feature.Set+qubesfirewall.forward.web dom0 name work\0tcp 8080 from 0.0.0.0/0", Raw(Server.Calls[^1]));
        Assert.Equal("tcp 8080 from 0.0.0.0/0", Backend.GetFeature("work", "qubesfirewall.forward.web"));
        Assert.Equal("admin.vm.feature.Get+qubesfirewall.forward.web dom0 name work\0", Raw(Server.Calls[^1]));
        Assert.Contains("qubesfirewall.forward.web", Backend.ListFeatures("work"));
        Assert.Equal("admin.vm.feature.List+ dom0 name work\0", Raw(Server.Calls[^1]));
        // Written through to qubes.xml, as qubesd saves it: the offline root sees the same feature.
        Assert.Equal("tcp 8080 from 0.0.0.0/0", new OfflineRoot(_live.Root).GetInventory().Get("work").Features["qubesfirewall.forward.web"]);
        Assert.True(Backend.RemoveFeature("work", "qubesfirewall.forward.web"));
        Assert.Equal("admin.vm.feature.Remove+qubesfirewall.forward.web dom0 name work\0", Raw(Server.Calls[^1]));
        Assert.False(Backend.RemoveFeature("work", "qubesfirewall.forward.web"));
        Assert.Null(Backend.GetFeature("work", "qubesfirewall.forward.web"));
    }

    [Theory]
    [InlineData("bad name", "x", "InvalidFeatureName")]
    [InlineData("ok", "caf\u00e9", "InvalidFeatureValue")]
    [InlineData("ok", "two\nlines", "InvalidFeatureValue")]
    public void Feature_names_and_values_qubesd_would_refuse_are_never_sent(string name, string value, string errorId)
    {
        Assert.Equal(errorId, Assert.Throws<QubesFirewallException>(() => Backend.SetFeature("work", name, value)).ErrorId);
        Assert.Empty(Server.Calls);
    }

    [Fact]
    public void A_feature_change_is_seen_by_the_next_inventory()
    {
        Backend.GetInventory();
        Backend.SetFeature("personal", "ipv6", "1");
        Assert.Equal("1", Backend.GetInventory().Get("personal").Features["ipv6"]);
    }

    [Fact]
    public void Properties_are_set_and_reset_for_netvm_repair()
    {
        Backend.SetProperty("work", "netvm", "sys-firewall");
        Assert.Equal("admin.vm.property.Set+netvm dom0 name work\0sys-firewall", Raw(Server.Calls[^1]));
        var qube = Backend.GetInventory().Get("work");
        Assert.Equal(NetVmSource.Explicit, qube.NetVmSource);
        Backend.ResetProperty("work", "netvm");
        Assert.Equal("admin.vm.property.Reset+netvm dom0 name work\0", Raw(Server.Calls[^1]));
        Assert.Equal(NetVmSource.Default, Backend.GetInventory().Get("work").NetVmSource);
        var refused = Assert.Throws<QubesdException>(() => Backend.SetProperty("work", "netvm", "vault"));
        // core-admin qubes/vm/mix/net.py _setter_netvm (l.70-76) raises QubesValueError for a qube that does not provide network
        Assert.Equal("QubesValueError", refused.QubesdClass);
    }

    [Fact]
    public void Start_asks_qubesd_and_the_next_inventory_sees_it_running()
    {
        Assert.Equal(PowerState.Halted, Backend.GetInventory().Get("untrusted").State);
        Backend.StartQube("untrusted");
        Assert.Equal("admin.vm.Start+ dom0 name untrusted\0", Raw(Server.Calls[^1]));
        Assert.Equal(PowerState.Running, Backend.GetInventory().Get("untrusted").State);
    }

    [Fact]
    public void The_selector_picks_the_live_backend_when_the_socket_exists_and_no_root_is_given()
    {
        using var backend = BackendSelector.Open(null, name => name == BackendSelector.SocketVariable ? Server.SocketPath : null);
        Assert.IsType<AdminApiBackend>(backend);
        Assert.Equal($"qubesd at {Server.SocketPath}", backend.Description);
        using var offline = BackendSelector.Open(_live.Root, name => name == BackendSelector.SocketVariable ? Server.SocketPath : null);
        Assert.IsType<OfflineRoot>(offline);
        using var fromEnv = BackendSelector.Open(null, name => name switch
        {
            BackendSelector.SocketVariable => Server.SocketPath,
            BackendSelector.RootVariable => _live.Root,
            _ => null,
        });
        Assert.IsType<OfflineRoot>(fromEnv);
    }
}

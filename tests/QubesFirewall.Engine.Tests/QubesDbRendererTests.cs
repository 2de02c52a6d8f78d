using QubesFirewall.Engine.Formats;
using QubesFirewall.Engine.Model;
using QubesFirewall.TestQubesd.CoreAdmin;

namespace QubesFirewall.Engine.Tests;

public class QubesDbRendererTests
{
    private static readonly DateTimeOffset Now = DateTimeOffset.FromUnixTimeSeconds(1_800_000_000);

    private static readonly string[] Lines =
    [
        "action=accept specialtarget=dns",
        "action=accept dst6=2001:db8::/64 proto=tcp dstports=443-443",
        "action=accept expire=1700000000 dst4=10.9.9.9/32",            // expired: skipped, number kept
        "action=accept dst4=10.1.2.0/24 proto=tcp dstports=443-443 comment=intranet",
        "action=drop",
    ];

    // What qubesd writes for these rules (core-admin snapshot 1ad5f9b8): per family the client has, "policy" =
    // "drop" and one key per rule numbered "{:04}" by its position in the whole list, expired rules and rules
    // of the other family left out (qubes/firewall.py Firewall.qdb_entries, l.640-657); each value is
    // Rule.rule, the api_rule words without expire and comment (l.367-378); then the empty key without the
    // trailing slash that tells the agent the list is complete (qubes/vm/mix/net.py reload_firewall_for_vm,
    // l.506-525). Qubesds_reading_of_the_rules_gives_the_same_entries builds it independently.
    private static readonly (string, string)[] Expected =
    [
        ("/qubes-firewall/10.137.0.12/policy", "drop"),
        ("/qubes-firewall/10.137.0.12/0000", "action=accept specialtarget=dns"),
        ("/qubes-firewall/10.137.0.12/0003", "action=accept dst4=10.1.2.0/24 proto=tcp dstports=443-443"),
        ("/qubes-firewall/10.137.0.12/0004", "action=drop"),
        ("/qubes-firewall/10.137.0.12", ""),
        ("/qubes-firewall/fd09:24ef:4179::a89:c/policy", "drop"),
        ("/qubes-firewall/fd09:24ef:4179::a89:c/0000", "action=accept specialtarget=dns"),
        ("/qubes-firewall/fd09:24ef:4179::a89:c/0001", "action=accept dst6=2001:db8::/64 proto=tcp dstports=443-443"),
        ("/qubes-firewall/fd09:24ef:4179::a89:c/0004", "action=drop"),
        ("/qubes-firewall/fd09:24ef:4179::a89:c", ""),
    ];

    [Fact]
    public void Renders_keys_numbering_family_split_and_commit_marker()
    {
        var rules = Lines.Select(l => RuleText.Parse(l)).ToList();

        var entries = QubesDbRenderer.Render("sys-firewall", "10.137.0.12", "fd09:24ef:4179::a89:c", rules, Now);

        Assert.All(entries, e => Assert.Equal("sys-firewall", e.QubeName));
        Assert.Equal(Expected, entries.Select(e => (e.Path, e.Value)));
    }

    [Fact]
    public void Qubesds_reading_of_the_rules_gives_the_same_entries()
    {
        // the stand-in qubesd (tools/TestQubesd/CoreAdmin), written from core-admin without the module's code
        var rules = Lines.Select(l => QubesdRule.FromApiString(l)).ToList();
        var entries = new List<(string, string)>();
        foreach (var (family, ip) in new[] { (4, "10.137.0.12"), (6, "fd09:24ef:4179::a89:c") })
        {
            entries.AddRange(QubesdFirewall.QubesDbEntries(rules, family, Now).Select(e => ($"/qubes-firewall/{ip}/{e.Key}", e.Value)));
            entries.Add(($"/qubes-firewall/{ip}", ""));
        }
        Assert.Equal(Expected, entries);
    }

    [Fact]
    public void A_client_without_IPv6_gets_only_IPv4_entries()
    {
        var entries = QubesDbRenderer.Render("sys-net", "10.137.0.6", null, [RuleText.Parse("action=accept")], Now);
        Assert.Equal(["/qubes-firewall/10.137.0.6/policy", "/qubes-firewall/10.137.0.6/0000", "/qubes-firewall/10.137.0.6"], entries.Select(e => e.Path));
    }
}

using QubesFirewall.Engine.Formats;
using QubesFirewall.Engine.Model;

namespace QubesFirewall.Engine.Tests;

public class QubesDbRendererTests
{
    private static readonly DateTimeOffset Now = DateTimeOffset.FromUnixTimeSeconds(1_800_000_000);

    [Fact]
    public void Renders_keys_numbering_family_split_and_commit_marker()
    {
        var rules = new[]
        {
            "action=accept specialtarget=dns",
            "action=accept dst6=2001:db8::/64 proto=tcp dstports=443-443",
            "action=accept expire=1700000000 dst4=10.9.9.9/32",            // expired: skipped, number kept
            "action=accept dst4=10.1.2.0/24 proto=tcp dstports=443-443 comment=intranet",
            "action=drop",
        }.Select(l => RuleText.Parse(l)).ToList();

        var entries = QubesDbRenderer.Render("sys-firewall", "10.137.0.12", "fd09:24ef:4179::a89:c", rules, Now);

        Assert.All(entries, e => Assert.Equal("sys-firewall", e.QubeName));
        Assert.Equal(new[]
        {
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
        }, entries.Select(e => (e.Path, e.Value)));
    }

    [Fact]
    public void A_client_without_IPv6_gets_only_IPv4_entries()
    {
        var entries = QubesDbRenderer.Render("sys-net", "10.137.0.6", null, [RuleText.Parse("action=accept")], Now);
        Assert.Equal(["/qubes-firewall/10.137.0.6/policy", "/qubes-firewall/10.137.0.6/0000", "/qubes-firewall/10.137.0.6"], entries.Select(e => e.Path));
    }
}

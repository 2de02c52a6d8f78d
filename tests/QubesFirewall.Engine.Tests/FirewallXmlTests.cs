using System.Text;
using QubesFirewall.Engine;
using QubesFirewall.Engine.Formats;
using QubesFirewall.Engine.Model;
using QubesFirewall.TestQubesd.CoreAdmin;

namespace QubesFirewall.Engine.Tests;

public class FirewallXmlTests
{
    private static readonly DateTimeOffset Now = DateTimeOffset.FromUnixTimeSeconds(1_800_000_000);

    // Written by hand the way qubesd writes a v2 file; where each detail comes from (core-admin, snapshot
    // 1ad5f9b8, qubes/firewall.py unless said otherwise):
    // - <firewall version="2"><rules><rule><properties><property name=..>: Firewall.save, l.595-616, and
    //   PropertyHolder.xml_properties, qubes/__init__.py l.759-791;
    // - property order action, comment, expire, dsthost, proto, specialtarget, dstports, icmptype: property_list()
    //   sorts by (load_stage, order, name), qubes/__init__.py l.387, with the orders of Rule's properties, l.286-330;
    // - dsthost stored with its prefix (a bare address gets /32 or /128): DstHost.__init__, l.101-166;
    //   dstports stored as "443" (a range as "N-M"): DstPorts.__init__, l.186-191; expire and comment as given;
    // - two-space indentation, no XML declaration, a final newline: lxml's write(encoding="UTF-8",
    //   pretty_print=True), l.620-624; expired rules left out, l.603-605.
    // The_hand_written_file_is_what_qubesds_save_writes builds the same text with the stand-in qubesd's
    // reading of those functions (tools/TestQubesd/CoreAdmin), which shares no code with the module.
    private const string QubesdFile =
        "<firewall version=\"2\">\n" +
        "  <rules>\n" +
        "    <rule>\n      <properties>\n" +
        "        <property name=\"action\">accept</property>\n" +
        "        <property name=\"specialtarget\">dns</property>\n" +
        "      </properties>\n    </rule>\n" +
        "    <rule>\n      <properties>\n" +
        "        <property name=\"action\">accept</property>\n" +
        "        <property name=\"comment\">intranet https</property>\n" +
        "        <property name=\"expire\">1900000000</property>\n" +
        "        <property name=\"dsthost\">10.1.2.0/24</property>\n" +
        "        <property name=\"proto\">tcp</property>\n" +
        "        <property name=\"dstports\">443</property>\n" +
        "      </properties>\n    </rule>\n" +
        "    <rule>\n      <properties>\n" +
        "        <property name=\"action\">accept</property>\n" +
        "        <property name=\"proto\">icmp</property>\n" +
        "        <property name=\"icmptype\">8</property>\n" +
        "      </properties>\n    </rule>\n" +
        "    <rule>\n      <properties>\n" +
        "        <property name=\"action\">drop</property>\n" +
        "      </properties>\n    </rule>\n" +
        "  </rules>\n" +
        "</firewall>\n";

    private static FirewallDocument Parse(string xml) => FirewallXml.Parse(new MemoryStream(Encoding.UTF8.GetBytes(xml)), "test.xml");

    [Fact]
    public void A_file_qubesd_wrote_round_trips_byte_for_byte()
    {
        var doc = Parse(QubesdFile);
        Assert.Equal(4, doc.Rules.Count);
        Assert.Equal("action=accept expire=1900000000 dst4=10.1.2.0/24 proto=tcp dstports=443-443 comment=intranet https", doc.Rules[1].Text);
        Assert.Equal(QubesdFile, FirewallXml.Render(doc.Rules, Now));
    }

    [Fact]
    public void The_hand_written_file_is_what_qubesds_save_writes()
    {
        // the rules as admin.vm.firewall.Set lines, in any key order
        string[] lines =
        [
            "action=accept specialtarget=dns",
            "dstports=443 proto=tcp dst4=10.1.2.0/24 expire=1900000000 action=accept comment=intranet https",
            "action=accept proto=icmp icmptype=8",
            "action=drop",
        ];
        Assert.Equal(QubesdFile, QubesdFirewall.Render(lines.Select(l => QubesdRule.FromApiString(l)), Now));
        Assert.Equal("<firewall version=\"2\">\n  <rules/>\n</firewall>\n", QubesdFirewall.Render([], Now));
    }

    [Fact]
    public void Writes_properties_in_qubesds_order_and_bare_addresses_with_a_prefix()
    {
        var rule = RuleText.Parse("dstports=22 proto=tcp dsthost=10.0.0.1 expire=1900000000 action=accept comment=ssh");
        var xml = FirewallXml.Render([rule], Now);
        var order = new[] { "action", "comment", "expire", "dsthost", "proto", "dstports" };
        var positions = order.Select(n => xml.IndexOf($"name=\"{n}\"", StringComparison.Ordinal)).ToList();
        Assert.All(positions, p => Assert.True(p > 0));
        Assert.Equal(positions.OrderBy(p => p), positions);
        Assert.Contains("<property name=\"dsthost\">10.0.0.1/32</property>", xml);
        Assert.Contains("<property name=\"dstports\">22</property>", xml);
    }

    [Fact]
    public void Unknown_properties_survive_a_round_trip()
    {
        var xml = QubesdFile.Replace("<property name=\"action\">drop</property>\n",
            "<property name=\"action\">drop</property>\n        <property name=\"x-owner\">salt</property>\n");
        var doc = Parse(xml);
        Assert.Equal([new KeyValuePair<string, string>("x-owner", "salt")], doc.Rules[3].UnknownProperties);
        Assert.Contains("<property name=\"x-owner\">salt</property>", FirewallXml.Render(doc.Rules, Now));
    }

    [Fact]
    public void Expired_rules_are_kept_on_read_and_dropped_on_write()
    {
        var xml = QubesdFile.Replace("1900000000", "1700000000");
        var doc = Parse(xml);
        Assert.Equal(4, doc.Rules.Count);
        Assert.True(doc.Rules[1].IsExpiredAt(Now));
        var written = Parse(FirewallXml.Render(doc.Rules, Now));
        Assert.Equal(3, written.Rules.Count);
        Assert.DoesNotContain(written.Rules, r => r.Comment == "intranet https");
    }

    [Fact]
    public void Empty_rule_list_is_written_as_qubesd_does()
    {
        Assert.Equal("<firewall version=\"2\">\n  <rules/>\n</firewall>\n", FirewallXml.Render([], Now));
    }

    [Fact]
    public void Missing_file_is_the_default_accept_rule()
    {
        var doc = FirewallXml.Load(Path.Combine(Path.GetTempPath(), Guid.NewGuid().ToString("N"), "firewall.xml"));
        Assert.False(doc.FileExists);
        Assert.Equal("action=accept", Assert.Single(doc.Rules).Text);
    }

    [Fact]
    public void Version_1_files_are_converted_as_qubesd_converts_them()
    {
        // Qubes 3.x: deny by default, DNS and ICMP allowed, two exceptions.
        const string v1 = "<QubesFirewallRules policy=\"deny\" dns=\"allow\" icmp=\"allow\" yumProxy=\"allow\">\n" +
                          "  <rule address=\"192.168.0.0\" netmask=\"24\" proto=\"tcp\" port=\"443\"/>\n" +
                          "  <rule address=\"qubes-os.org\" port=\"80\" toport=\"81\"/>\n" +
                          "</QubesFirewallRules>\n";
        var doc = Parse(v1);
        Assert.Equal(1, doc.Version);
        Assert.Equal(
            ["action=accept specialtarget=dns", "action=accept proto=icmp", "action=accept dst4=192.168.0.0/24 proto=tcp dstports=443-443", "action=accept dsthost=qubes-os.org proto=tcp dstports=80-81"],
            doc.Rules.Select(r => r.Text));

        var allow = Parse("<firewall policy=\"allow\" dns=\"allow\" icmp=\"deny\"><rule address=\"10.0.0.1\"/></firewall>");
        Assert.Equal(["action=accept specialtarget=dns", "action=drop proto=icmp", "action=drop dst4=10.0.0.1/32", "action=accept"], allow.Rules.Select(r => r.Text));
    }

    [Fact]
    public void Rules_an_older_qubesd_accepted_load_flagged_and_are_never_written()
    {
        var xml = QubesdFile.Replace("<property name=\"dstports\">443</property>", "<property name=\"dstports\">65536</property>")
            .Replace("<property name=\"specialtarget\">dns</property>", "<property name=\"dsthost\"></property>");
        var doc = Parse(xml);
        Assert.NotEmpty(doc.Rules[0].Problems);
        Assert.NotEmpty(doc.Rules[1].Problems);
        Assert.Empty(doc.Rules[2].Problems);
        Assert.Equal("action=accept dsthost=", doc.Rules[0].Text);
        var ex = Assert.Throws<QubesFirewallException>(() => FirewallXml.Render(doc.Rules, Now));
        Assert.Equal("InvalidFirewallRule", ex.ErrorId);
        // Without them the list is writable again.
        Assert.Contains("icmptype", FirewallXml.Render(doc.Rules.Skip(2), Now));
    }

    [Theory]
    [InlineData("<firewall version=\"3\"><rules/></firewall>")]
    [InlineData("<firewall version=\"2\"></firewall>")]
    [InlineData("<firewall version=\"2\"><rules><rule><properties><property name=\"action\">forward</property></properties></rule></rules></firewall>")]
    [InlineData("<firewall version=\"2\"><rules><rule><properties><property name=\"proto\">tcp</property></properties></rule></rules></firewall>")]
    [InlineData("<notfirewall/>")]
    [InlineData("<firewall version=\"2\"><rules>")]
    [InlineData("<!DOCTYPE x [<!ENTITY a \"b\">]><firewall version=\"2\"><rules/></firewall>")]
    public void Unreadable_files_give_a_clear_error(string xml)
    {
        var ex = Assert.Throws<QubesFirewallException>(() => Parse(xml));
        Assert.Equal("InvalidFirewallXml", ex.ErrorId);
        Assert.Contains("test.xml", ex.Message);
    }

    // The one-pass reader keeps the meaning a LINQ to XML tree gave these files (what qubesd's lxml reads too).
    [Fact]
    public void A_value_is_all_the_text_inside_its_property_and_only_the_first_rules_and_properties_count()
    {
        const string xml =
            "<?xml version=\"1.0\"?>\n<!-- a comment -->\n<firewall version=\"2\">\n" +
            "  <other><rules><rule><properties><property name=\"action\">drop</property></properties></rule></rules></other>\n" +
            "  <rules>\n" +
            "    <rule><ignored/><properties>" +
            "<property name=\"action\">acc<b>ep</b><![CDATA[t]]></property>" +
            "<property name=\"comment\"> two  words </property>" +
            "<x:property xmlns:x=\"urn:x\" name=\"proto\">tcp</x:property>" +
            "<note>not a property</note>" +
            "</properties><properties><property name=\"proto\">udp</property></properties></rule>\n" +
            "    <anything><properties><property name=\"action\">drop</property><property name=\"x-owner\"/></properties></anything>\n" +
            "    <rule/>\n" +
            "  </rules>\n" +
            "  <rules><rule><properties><property name=\"action\">drop</property></properties></rule></rules>\n" +
            "</firewall>\n";
        var ex = Assert.Throws<QubesFirewallException>(() => Parse(xml));
        // The third rule (line 8) has no action; the two before it were read as a tree reads them.
        Assert.Contains("test.xml, line 8", ex.Message);
        var doc = Parse(xml.Replace("    <rule/>\n", "", StringComparison.Ordinal));
        Assert.Equal(2, doc.Rules.Count);
        Assert.Equal("action=accept comment= two  words ", doc.Rules[0].Text);
        Assert.Equal("action=drop", doc.Rules[1].Text);
        Assert.Equal([new KeyValuePair<string, string>("x-owner", "")], doc.Rules[1].UnknownProperties);
    }

    [Fact]
    public void A_well_formedness_error_later_in_the_file_wins_over_a_bad_value_before_it()
    {
        const string bad = "<firewall version=\"2\"><rules><rule><properties><property name=\"action\">forward</property></properties></rule></rules>";
        var value = Assert.Throws<QubesFirewallException>(() => Parse(bad + "</firewall>"));
        Assert.Contains("neither accept nor drop", value.Message);
        var form = Assert.Throws<QubesFirewallException>(() => Parse(bad + "<rules></firewall>"));
        Assert.Contains("not well-formed XML", form.Message);
        var nameless = Assert.Throws<QubesFirewallException>(() => Parse(
            "<firewall version=\"2\"><rules><rule><properties>\n<property>accept</property></properties></rule></rules></firewall>"));
        Assert.Contains("a property without a name (line 2)", nameless.Message);
    }

    [Fact]
    public void Reads_from_a_stream_that_cannot_seek_and_version_1_files_still()
    {
        var v1 = "<QubesFirewallRules policy=\"deny\" dns=\"allow\" icmp=\"allow\"><rule address=\"10.0.0.1\" proto=\"tcp\" port=\"22\"/></QubesFirewallRules>";
        var doc = FirewallXml.Parse(new OneWayStream(Encoding.UTF8.GetBytes(v1)), "v1.xml");
        Assert.Equal(1, doc.Version);
        Assert.Equal("action=accept dst4=10.0.0.1/32 proto=tcp dstports=22-22", doc.Rules[2].Text);
        Assert.Equal(4, FirewallXml.Parse(new OneWayStream(Encoding.UTF8.GetBytes(QubesdFile)), "v2.xml").Rules.Count);
    }

    private sealed class OneWayStream(byte[] bytes) : MemoryStream(bytes)
    {
        public override bool CanSeek => false;
    }
}

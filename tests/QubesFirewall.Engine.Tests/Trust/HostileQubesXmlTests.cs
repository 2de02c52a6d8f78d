using System.Text.RegularExpressions;
using QubesFirewall.Engine.Formats;

namespace QubesFirewall.Engine.Tests.Trust;

/// <summary>
/// An offline root is just files: a qubes.xml with values qubesd's property types would never hold is refused
/// where it is read, naming the qube, the property and the line, before anything reaches a script.
/// </summary>
[System.Runtime.Versioning.UnsupportedOSPlatform("windows")]
public sealed class HostileQubesXmlTests
{
    private static readonly string Sample = File.ReadAllText(Path.Combine(OfflineRootTests.SamplePath(), "qubes.xml"));

    /// <summary>The sample with one more property on <paramref name="qube"/> (or its existing one replaced).</summary>
    private static string With(string qube, string property, string value)
    {
        var escaped = System.Security.SecurityElement.Escape(value);
        var nameTag = $"<property name=\"name\">{qube}</property>";
        var at = Sample.IndexOf(nameTag, StringComparison.Ordinal);
        Assert.True(at > 0);
        var start = Sample.LastIndexOf("<domain ", at, StringComparison.Ordinal);
        var end = Sample.IndexOf("</domain>", at, StringComparison.Ordinal);
        var domain = Regex.Replace(Sample[start..end], $"<property name=\"{property}\"[^>]*>[^<]*</property>", "");
        domain = domain.Replace(nameTag, nameTag + $"<property name=\"{property}\">{escaped}</property>", StringComparison.Ordinal);
        return Sample[..start] + domain + Sample[end..];
    }

    [Theory]
    [InlineData("ip", "10.137.0.11\nnft flush ruleset #", "is not an IPv4 address")]
    [InlineData("ip", "10.137.0.011", "is not an IPv4 address")]
    [InlineData("ip", "0x0a890001", "is not an IPv4 address")]
    [InlineData("ip", "10.137.0.11; reboot", "is not an IPv4 address")]
    [InlineData("ip6", "fd09:24ef:4179::a89:b\n#", "is not an IPv6 address")]
    [InlineData("ip6", "fe80::1%eth0", "is not an IPv6 address")]
    [InlineData("gateway", "10.137.0.1 $(id)", "is not an IP address")]
    [InlineData("netvm", "sys-net\u009b2J", "is not a qube name")]
    [InlineData("template", "fedora;rm", "is not a qube name")]
    [InlineData("label", "red\u009b31m", "is not a label name")]
    [InlineData("uuid", "not-a-uuid", "is not a UUID")]
    public void A_value_qubesd_would_never_store_is_refused_where_it_enters(string property, string value, string why)
    {
        var ex = Assert.Throws<QubesFirewallException>(() => QubesXml.Parse(With("work", property, value), "qubes.xml"));
        Assert.Equal("InvalidQubesXml", ex.ErrorId);
        Assert.Contains($"the qube 'work' (line ", ex.Message);
        Assert.Contains($"has {property} '", ex.Message);
        Assert.Contains(why, ex.Message);
        Assert.DoesNotContain(ex.Message, c => c is < ' ' or '\x7f' or (>= '\x80' and <= '\x9f'));
    }

    [Theory]
    [InlineData("netvm", "Domain-0")]
    [InlineData("netvm", "sys-gone")]
    [InlineData("template", "fedora-99")]
    public void A_reference_to_a_qube_the_file_does_not_hold_is_refused(string property, string value)
    {
        var ex = Assert.Throws<QubesFirewallException>(() => QubesXml.Parse(With("work", property, value), "qubes.xml"));
        Assert.Equal("InvalidQubesXml", ex.ErrorId);
        Assert.Contains($"the qube 'work' (line ", ex.Message);
        Assert.Contains($"has {property} '{value}', which is no qube of the file", ex.Message);
    }

    [Fact]
    public void A_newline_in_ip_is_shown_escaped()
    {
        var ex = Assert.Throws<QubesFirewallException>(() => QubesXml.Parse(With("work", "ip", "10.137.0.11\nnft flush ruleset"), "qubes.xml"));
        Assert.Contains("has ip '10.137.0.11\\u000Anft flush ruleset'", ex.Message);
    }

    [Fact]
    public void A_qube_name_qubesd_would_refuse_is_refused()
    {
        var xml = Sample.Replace("<property name=\"name\">work</property>", "<property name=\"name\">work\nx</property>", StringComparison.Ordinal);
        var ex = Assert.Throws<QubesFirewallException>(() => QubesXml.Parse(xml, "qubes.xml"));
        Assert.Equal("InvalidQubesXml", ex.ErrorId);
        Assert.Contains("has an invalid name", ex.Message);
    }

    [Fact]
    public void A_label_element_with_escapes_is_refused()
    {
        var xml = Sample.Replace(">red</label>", ">red\u009b0;x\u0085</label>", StringComparison.Ordinal);
        var ex = Assert.Throws<QubesFirewallException>(() => QubesXml.Parse(xml, "qubes.xml"));
        Assert.Contains("is not a label name", ex.Message);
    }

    [Fact]
    public void Valid_values_still_load()
    {
        var inv = QubesXml.Parse(With("work", "ip", "10.137.0.99"), "qubes.xml");
        Assert.Equal("10.137.0.99", inv.Get("work").IP);
    }
}

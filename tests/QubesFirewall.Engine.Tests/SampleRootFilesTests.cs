using QubesFirewall.TestQubesd.CoreAdmin;

namespace QubesFirewall.Engine.Tests;

/// <summary>
/// examples/qubes-root/README.md says its qubes.xml and appvms/work/firewall.xml are in the form qubesd writes
/// them. Checked here against the stand-in qubesd's writers (tools/TestQubesd/CoreAdmin, written from
/// core-admin's Firewall.save and Qubes.save without the module's code): writing back what was read gives
/// the same bytes.
/// </summary>
[System.Runtime.Versioning.UnsupportedOSPlatform("windows")]
public sealed class SampleRootFilesTests
{
    private static readonly DateTimeOffset Now = DateTimeOffset.FromUnixTimeSeconds(1_800_000_000);

    [Fact]
    public void The_sample_firewall_xml_is_what_qubesds_save_writes_for_its_rules()
    {
        var path = Path.Combine(OfflineRootTests.SamplePath(), "appvms", "work", "firewall.xml");
        var rules = QubesdFirewall.Load(path);
        Assert.Equal(7, rules.Count);
        Assert.Equal(File.ReadAllText(path), QubesdFirewall.Render(rules, Now));
    }

    [Fact]
    public void The_sample_qubes_xml_is_in_the_form_qubesds_save_writes()
    {
        var path = Path.Combine(OfflineRootTests.SamplePath(), "qubes.xml");
        Assert.Equal(File.ReadAllText(path), QubesdXml.Reserialize(path));
    }

    [Fact]
    public void The_version_1_sample_is_read_as_qubesds_load_v1_reads_it()
    {
        // appvms/personal/firewall.xml: policy deny, dns and icmp allowed, three rules (Firewall.load_v1 and
        // Rule.from_xml_v1, core-admin qubes/firewall.py l.398-443 and l.547-579)
        var rules = QubesdFirewall.Load(Path.Combine(OfflineRootTests.SamplePath(), "appvms", "personal", "firewall.xml"));
        Assert.Equal(
        [
            "action=accept specialtarget=dns",
            "action=accept proto=icmp",
            "action=accept dst4=192.168.1.0/24 proto=tcp dstports=8000-8080",
            "action=accept dsthost=mail.example.org proto=tcp dstports=993-993",
            "action=accept dst4=198.51.100.7/32 proto=tcp dstports=22-22",
        ], rules.Select(r => r.ApiRule(Now)));
        // and the module reads the same list
        Assert.Equal(rules.Select(r => r.ApiRule(Now)),
            new Backends.OfflineRoot(OfflineRootTests.SamplePath()).GetFirewall("personal").Rules.Select(r => r.Text));
    }
}

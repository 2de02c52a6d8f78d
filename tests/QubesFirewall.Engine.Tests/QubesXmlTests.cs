using System.Xml.Linq;
using QubesFirewall.Engine;
using QubesFirewall.Engine.Formats;
using QubesFirewall.Engine.Model;
using QubesFirewall.Engine.Agent;
using QubesFirewall.Engine.Validation;

namespace QubesFirewall.Engine.Tests;

/// <summary>
/// qubes.xml reading (inventory, effective netvm, addresses) and writing (features, properties).
/// Expected addresses are worked out by hand from core-admin's vmid_to_ipv4 / get_ip6_for_vm:
/// id &lt; 255 → prefix.0.id; else n = id - 1 → prefix.(n // 254).(n % 254 + 1).
/// </summary>
public sealed class QubesXmlTests : IDisposable
{
    private readonly string _dir;

    public QubesXmlTests()
    {
        _dir = Path.Combine(Path.GetTempPath(), "qfw-qubesxml-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(_dir);
    }

    public void Dispose()
    {
        try { Directory.Delete(_dir, recursive: true); } catch (IOException) { }
    }

    internal static string SampleRoot
    {
        get
        {
            for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
            {
                var candidate = Path.Combine(dir.FullName, "examples", "qubes-root");
                if (File.Exists(Path.Combine(candidate, "qubes.xml"))) return candidate;
            }
            throw new InvalidOperationException("examples/qubes-root not found above " + AppContext.BaseDirectory);
        }
    }

    private static string SampleXml => Path.Combine(SampleRoot, "qubes.xml");

    private string CopySample()
    {
        var path = Path.Combine(_dir, "qubes.xml");
        File.Copy(SampleXml, path, overwrite: true);
        return path;
    }

    private string Write(string content)
    {
        var path = Path.Combine(_dir, "qubes.xml");
        File.WriteAllText(path, content);
        return path;
    }

    // ------------------------------------------------------------------ sample inventory

    public static TheoryData<string, int, QubeClass, string?, NetVmSource, string?> SampleQubes => new()
    {
        // name, qid, class, netvm, source, ip
        { "dom0", 0, QubeClass.AdminVM, null, NetVmSource.None, null },
        { "fedora-42-xfce", 1, QubeClass.TemplateVM, null, NetVmSource.Default, null },
        { "debian-13-xfce", 2, QubeClass.TemplateVM, null, NetVmSource.Default, null },
        { "whonix-gateway-18", 3, QubeClass.TemplateVM, null, NetVmSource.Default, null },
        { "whonix-workstation-18", 4, QubeClass.TemplateVM, null, NetVmSource.Default, null },
        { "sys-net", 5, QubeClass.AppVM, null, NetVmSource.None, "10.137.0.5" },          // provides network: networked without a netvm
        { "default-dvm", 6, QubeClass.AppVM, "sys-firewall", NetVmSource.Default, "10.137.0.6" },
        { "sys-firewall", 7, QubeClass.DispVM, "sys-net", NetVmSource.Explicit, "10.138.10.201" }, // dispid 2741: 2740 = 10*254 + 200
        { "sys-usb", 8, QubeClass.AppVM, null, NetVmSource.None, null },
        { "default-mgmt-dvm", 9, QubeClass.AppVM, null, NetVmSource.None, null },
        { "personal", 10, QubeClass.AppVM, "sys-firewall", NetVmSource.Default, "10.137.0.10" },
        { "work", 11, QubeClass.AppVM, "sys-firewall", NetVmSource.Default, "10.137.0.11" },
        { "untrusted", 12, QubeClass.AppVM, "sys-firewall", NetVmSource.Default, "10.137.0.12" },
        { "vault", 13, QubeClass.AppVM, null, NetVmSource.None, null },
        { "sys-whonix", 14, QubeClass.AppVM, "sys-firewall", NetVmSource.Explicit, "10.137.0.14" },
        { "whonix-workstation-18-dvm", 15, QubeClass.AppVM, "sys-whonix", NetVmSource.Explicit, "10.137.0.15" },
        { "anon-whonix", 16, QubeClass.AppVM, "sys-whonix", NetVmSource.Explicit, "10.137.0.16" },
    };

    [Theory]
    [MemberData(nameof(SampleQubes))]
    public void Sample_qube_has_qubesd_network_settings(string name, int qid, QubeClass cls, string? netvm, NetVmSource source, string? ip)
    {
        var q = QubesXml.Load(SampleXml).Find(name);
        Assert.NotNull(q);
        Assert.Equal(qid, q.Qid);
        Assert.Equal(cls, q.Class);
        Assert.Equal(cls.ToString(), q.ClassName);
        Assert.Equal(netvm, q.NetVM);
        Assert.Equal(source, q.NetVmSource);
        Assert.Equal(ip, q.IP);
        Assert.Null(q.IPv6); // no ipv6 feature anywhere in a default install
        Assert.Equal(PowerState.Unknown, q.State);
        Assert.Equal(name, q.ToString());
    }

    [Fact]
    public void Sample_lists_every_qube_in_file_order()
    {
        var inv = QubesXml.Load(SampleXml);
        Assert.Equal(
            ["dom0", "anon-whonix", "debian-13-xfce", "default-dvm", "default-mgmt-dvm", "fedora-42-xfce", "personal", "sys-firewall",
             "sys-net", "sys-usb", "sys-whonix", "untrusted", "vault", "whonix-gateway-18", "whonix-workstation-18", "whonix-workstation-18-dvm", "work"],
            inv.Qubes.Select(q => q.Name));
        Assert.Equal("sys-firewall", inv.DefaultNetVM);
        Assert.Equal("fedora-42-xfce", inv.GlobalProperties["default_template"]);
        Assert.Equal("default-dvm", inv.GlobalProperties["default_dispvm"]);
        Assert.Equal("sys-net", inv.GlobalProperties["clockvm"]);
        Assert.Equal("sys-firewall", inv.GlobalProperties["updatevm"]);
        Assert.Equal(8, inv.Labels.Count);
        Assert.Equal("0xcc0000", inv.Labels["red"]);
        Assert.Equal("0x000000", inv.Labels["black"]);
        Assert.Null(inv.Find("Work")); // names are case-sensitive
        Assert.Null(inv.Find("nonexistent"));
        Assert.Equal("QubeNotFound", Assert.Throws<QubesFirewallException>(() => inv.Get("nonexistent")).ErrorId);
        Assert.Equal(SampleXml, inv.SourcePath);
    }

    [Fact]
    public void Sample_details_of_network_qubes_templates_and_disposables()
    {
        var inv = QubesXml.Load(SampleXml);
        var fw = inv.Get("sys-firewall");
        Assert.True(fw.ProvidesNetwork);
        Assert.Equal(2741, fw.DispId);
        Assert.Equal("default-dvm", fw.Template);
        Assert.Equal("default-dvm", fw.DefaultDispVM); // a disposable's default_dispvm defaults to its template
        Assert.Equal("green", fw.Label);
        Assert.Equal("1", fw.Features["servicevm"]);
        Assert.Equal("appvms/sys-firewall", fw.RelativeDirectory);

        var net = inv.Get("sys-net");
        Assert.True(net.ProvidesNetwork);
        Assert.Equal("", net.Properties["netvm"]);
        Assert.Equal("True", net.Properties["provides_network"]);

        var work = inv.Get("work");
        Assert.False(work.ProvidesNetwork);
        Assert.Equal("fedora-42-xfce", work.Template);
        Assert.Equal("blue", work.Label);
        Assert.Equal("default-dvm", work.DefaultDispVM); // global default_dispvm
        Assert.False(work.Properties.ContainsKey("netvm"));
        Assert.Equal(AgentScript.VersionFeature, Assert.Single(work.Features).Key); // the sample records the agent installed
        Assert.Contains("created-by-dom0", work.Tags);

        var anon = inv.Get("anon-whonix");
        Assert.Equal("whonix-workstation-18-dvm", anon.DefaultDispVM);
        Assert.Equal("whonix-workstation-18", anon.Template);
        Assert.Contains("anon-vm", anon.Tags);

        var dvm = inv.Get("default-dvm");
        Assert.True(dvm.TemplateForDispVMs);
        Assert.False(work.TemplateForDispVMs);

        var template = inv.Get("fedora-42-xfce");
        Assert.Null(template.Template);
        Assert.Equal("vm-templates/fedora-42-xfce", template.RelativeDirectory);
        Assert.Equal("fedora", template.Features["os-distribution"]);
        Assert.Equal("black", template.Label);

        var dom0 = inv.Get("dom0");
        Assert.Null(dom0.RelativeDirectory);
        Assert.Equal("black", dom0.Label);
        Assert.Equal("default-dvm", dom0.DefaultDispVM);

        Assert.Equal(["default-dvm", "personal", "sys-whonix", "untrusted", "work"], inv.ClientsOf("sys-firewall").Select(q => q.Name));
        Assert.Equal(["sys-whonix", "sys-firewall", "sys-net"], inv.UpstreamOf("anon-whonix").Select(q => q.Name));
    }

    [Fact]
    public void Sample_has_a_directory_for_each_qube()
    {
        foreach (var q in QubesXml.Load(SampleXml).Qubes.Where(q => q.RelativeDirectory is not null))
            Assert.True(Directory.Exists(Path.Combine(SampleRoot, q.RelativeDirectory!)), q.Name);
    }

    [Fact]
    public void Sample_is_stored_exactly_as_qubesd_serializes_it()
    {
        var text = File.ReadAllText(SampleXml);
        Assert.DoesNotContain("<?xml", text); // lxml's write(encoding="UTF-8") writes no declaration
        Assert.Equal(text, QubesXml.Serialize(XDocument.Parse(text, LoadOptions.PreserveWhitespace)));
    }

    [Fact]
    public void With_power_states_copies_every_qube()
    {
        var inv = QubesXml.Load(SampleXml).WithPowerStates(n => n == "sys-net" ? PowerState.Running : PowerState.Halted);
        Assert.Equal(PowerState.Running, inv.Get("sys-net").State);
        Assert.Equal(PowerState.Halted, inv.Get("work").State);
        Assert.Equal("sys-firewall", inv.DefaultNetVM);
    }

    // ------------------------------------------------------------------ addresses

    private static string Domain(int qid, string name, string cls = "AppVM", string props = "", string features = "") =>
        $"""
            <domain id="domain-{qid}" class="{cls}">
              <properties>
                <property name="name">{name}</property>
                <property name="qid">{qid}</property>
                {props}
              </properties>
              <features>{features}</features>
              <tags/>
            </domain>
        """;

    private static string Qubes(string globals, params string[] domains) =>
        $"""
        <qubes>
          <labels>
            <label id="label-1" color="0xcc0000">red</label>
            <label id="label-2" color="0xf57900">orange</label>
            <label id="label-3" color="0xedd400">yellow</label>
          </labels>
          <properties>{globals}</properties>
          <domains>
            <domain id="domain-0" class="AdminVM"><properties/><features/><tags/></domain>
        {string.Join("\n", domains)}
          </domains>
        </qubes>
        """;

    private const string Net = """<property name="provides_network">True</property><property name="netvm"></property>""";
    private const string DefaultFw = """<property name="default_netvm">fw</property>""";

    [Theory]
    [InlineData(1, "10.137.0.1")]
    [InlineData(2, "10.137.0.2")]
    [InlineData(100, "10.137.0.100")]
    [InlineData(254, "10.137.0.254")]
    [InlineData(255, "10.137.1.1")]     // 254 → 1.(0 + 1)
    [InlineData(256, "10.137.1.2")]
    [InlineData(508, "10.137.1.254")]   // 507 = 1*254 + 253
    [InlineData(509, "10.137.2.1")]     // 508 = 2*254 + 0
    [InlineData(1000, "10.137.3.238")]  // 999 = 3*254 + 237
    [InlineData(10000, "10.137.39.94")] // max_qid: 9999 = 39*254 + 93
    public void IPv4_from_qid_follows_vmid_to_ipv4(int qid, string expected)
    {
        Assert.Equal(expected, QubesXml.IPv4For(qid, disposable: false));
        var inv = QubesXml.Parse(Qubes(DefaultFw, Domain(20000, "fw", props: Net), Domain(qid, "q")));
        Assert.Equal(expected, inv.Get("q").IP);
    }

    [Theory]
    [InlineData(0, "10.138.0.0")]       // randrange(max_dispid) can give 0: vmid 0 is below 255, so x.y.0.0
    [InlineData(1, "10.138.0.1")]
    [InlineData(254, "10.138.0.254")]
    [InlineData(255, "10.138.1.1")]
    [InlineData(2741, "10.138.10.201")] // 2740 = 10*254 + 200
    [InlineData(9999, "10.138.39.93")]  // 9998 = 39*254 + 92
    public void Disposable_IPv4_comes_from_dispid(int dispid, string expected)
    {
        Assert.Equal(expected, QubesXml.IPv4For(dispid, disposable: true));
        var inv = QubesXml.Parse(Qubes(DefaultFw,
            Domain(2, "fw", props: Net),
            Domain(3, "dvm", props: """<property name="template_for_dispvms">True</property>"""),
            Domain(40, "disp", "DispVM", $"""<property name="dispid">{dispid}</property><property name="template">dvm</property>""")));
        var disp = inv.Get("disp");
        Assert.Equal(expected, disp.IP);
        Assert.Equal(dispid, disp.DispId);
        Assert.Equal("fw", disp.NetVM);
    }

    [Fact]
    public void Explicit_ip_property_wins()
    {
        var inv = QubesXml.Parse(Qubes(DefaultFw,
            Domain(2, "fw", props: Net),
            Domain(3, "a", props: """<property name="ip">192.168.7.7</property>"""),
            Domain(4, "b", props: """<property name="ip">10.0.0.1</property><property name="netvm"></property>""")));
        Assert.Equal("192.168.7.7", inv.Get("a").IP);
        Assert.Equal("10.0.0.1", inv.Get("b").IP); // an explicit value is returned even without network, as qubesd does
    }

    [Fact]
    public void IPv6_follows_the_ipv6_feature_along_the_netvm_chain()
    {
        const string on = """<feature name="ipv6">1</feature>""";
        const string off = """<feature name="ipv6"></feature>""";
        var inv = QubesXml.Parse(Qubes(DefaultFw,
            Domain(2, "net", props: Net, features: on),
            Domain(3, "fw", props: """<property name="provides_network">True</property><property name="netvm">net</property>"""),
            Domain(10, "a"),                                         // fw → net has ipv6=1
            Domain(11, "b", features: off),                          // opts out
            Domain(12, "gw", props: """<property name="provides_network">True</property><property name="netvm">fw</property>""", features: off),
            Domain(13, "c", props: """<property name="netvm">gw</property>"""),       // gw's '' decides first
            Domain(14, "d", props: """<property name="netvm"></property>""", features: on), // not networked
            Domain(255, "e"),
            Domain(4, "dvm", props: """<property name="template_for_dispvms">True</property>"""),
            Domain(40, "disp", "DispVM", """<property name="dispid">2741</property><property name="template">dvm</property>"""),
            Domain(15, "f", props: """<property name="ip6">FD00:0:0:0::1</property>"""),
            Domain(16, "other", props: """<property name="provides_network">True</property><property name="netvm"></property>""", features: """<feature name="ipv6">0</feature>"""),
            Domain(17, "g", props: """<property name="netvm">other</property>""")));

        Assert.Equal("fd09:24ef:4179::a89:2", inv.Get("net").IPv6);  // net's own feature, no netvm: its own address
        Assert.Equal("fd09:24ef:4179::a89:3", inv.Get("fw").IPv6);
        Assert.Equal("fd09:24ef:4179::a89:a", inv.Get("a").IPv6);    // qid 10 in hex
        Assert.Null(inv.Get("b").IPv6);
        Assert.Null(inv.Get("gw").IPv6);
        Assert.Null(inv.Get("c").IPv6);
        Assert.Null(inv.Get("d").IPv6);
        Assert.Equal("fd09:24ef:4179::a89:ff", inv.Get("e").IPv6);   // 255
        Assert.Equal("fd09:24ef:4179::a8a:ab5", inv.Get("disp").IPv6); // dispid 2741 = 0xab5
        Assert.Equal("fd00::1", inv.Get("f").IPv6);                  // explicit ip6 wins (no feature needed)
        Assert.Equal("fd09:24ef:4179::a89:11", inv.Get("g").IPv6);   // any non-empty value enables, "0" too (Python truthiness)
        Assert.Equal("10.137.1.1", inv.Get("e").IP);
    }

    // ------------------------------------------------------------------ effective netvm

    [Fact]
    public void Effective_netvm_is_explicit_or_default_or_none_as_qubesd_computes_it()
    {
        var inv = QubesXml.Parse(Qubes(DefaultFw,
            Domain(2, "net", props: Net),
            Domain(3, "fw", props: """<property name="provides_network">True</property><property name="netvm">net</property>"""),
            Domain(4, "app"),
            Domain(5, "off", props: """<property name="netvm"></property>"""),
            Domain(6, "proxy", props: """<property name="provides_network">True</property>"""), // provides network, no netvm property
            Domain(7, "tpl", "TemplateVM"),
            Domain(8, "tpl2", "TemplateVM", """<property name="netvm">fw</property>"""),
            Domain(9, "alone", "StandaloneVM"),
            Domain(10, "odd", "FancyVM"),
            Domain(11, "remote", "RemoteVM")));

        void Check(string name, string? netvm, NetVmSource source)
        {
            var q = inv.Get(name);
            Assert.Equal(netvm, q.NetVM);
            Assert.Equal(source, q.NetVmSource);
        }
        Check("dom0", null, NetVmSource.None);
        Check("net", null, NetVmSource.None);
        Check("fw", "net", NetVmSource.Explicit);
        Check("app", "fw", NetVmSource.Default);
        Check("off", null, NetVmSource.None);
        Check("proxy", "fw", NetVmSource.Default); // net.py: default_netvm applies whether or not the qube provides network
        Check("tpl", null, NetVmSource.Default);   // TemplateVM's netvm defaults to none
        Check("tpl2", "fw", NetVmSource.Explicit);
        Check("alone", "fw", NetVmSource.Default);
        Check("odd", "fw", NetVmSource.Default);   // unknown class: read like an AppVM
        Check("remote", null, NetVmSource.None);
        Assert.Equal(QubeClass.AppVM, inv.Get("odd").Class);
        Assert.Equal("FancyVM", inv.Get("odd").ClassName);
        Assert.Null(inv.Get("remote").IP);
        Assert.Null(inv.Get("tpl").IP);
        Assert.Equal("10.137.0.7", QubesXml.Parse(Qubes(DefaultFw, Domain(2, "fw", props: Net), Domain(7, "tpl", "TemplateVM", """<property name="netvm">fw</property>"""))).Get("tpl").IP);
    }

    [Fact]
    public void Netvm_loops_are_broken_like_qubesd_does_on_load()
    {
        var inv = QubesXml.Parse(Qubes(DefaultFw,
            Domain(2, "fw", props: """<property name="provides_network">True</property>"""), // follows default_netvm = itself
            Domain(3, "x", props: """<property name="provides_network">True</property><property name="netvm">y</property>"""),
            Domain(4, "y", props: """<property name="provides_network">True</property><property name="netvm">x</property>"""),
            Domain(5, "app")));
        Assert.Null(inv.Get("fw").NetVM);
        Assert.Equal(NetVmSource.None, inv.Get("fw").NetVmSource);
        Assert.Null(inv.Get("x").NetVM);        // the first of the loop loaded is disconnected
        Assert.Equal("x", inv.Get("y").NetVM);  // which ends the chain for the other
        Assert.Equal("fw", inv.Get("app").NetVM);
        Assert.Equal("10.137.0.2", inv.Get("fw").IP); // still networked: it provides network
    }

    [Fact]
    public void No_default_netvm_means_no_network_for_default_followers()
    {
        var inv = QubesXml.Parse(Qubes("""<property name="default_netvm"></property>""", Domain(2, "app")));
        Assert.Null(inv.Get("app").NetVM);
        Assert.Equal(NetVmSource.Default, inv.Get("app").NetVmSource);
        Assert.Null(inv.Get("app").IP);
        Assert.Null(inv.DefaultNetVM);
    }

    [Fact]
    public void Labels_refs_legacy_forms_and_missing_dom0()
    {
        var xml = """
            <qubes>
              <labels>
                <label id="label-1" color="0xcc0000">red</label>
                <label id="label-3" color="0xedd400">yellow</label>
              </labels>
              <properties/>
              <domains>
                <domain id="domain-1" class="AppVM">
                  <properties>
                    <property name="qid">1</property>
                    <property name="name">a</property>
                    <property name="label" ref="label-1" />
                  </properties>
                </domain>
                <domain id="domain-2" class="AppVM">
                  <properties><property name="qid">2</property><property name="name">b</property><property name="label">label-3</property></properties>
                </domain>
                <domain id="domain-3" class="AppVM">
                  <properties><property name="qid">3</property><property name="name">c</property><property name="label">3</property></properties>
                </domain>
                <domain id="domain-4" class="AppVM">
                  <properties><property name="name">d</property><property name="label">yellow</property></properties>
                </domain>
              </domains>
            </qubes>
            """;
        var inv = QubesXml.Parse(xml);
        Assert.Equal("dom0", inv.Qubes[0].Name); // qubesd adds dom0 when qubes.xml has none
        Assert.Equal(QubeClass.AdminVM, inv.Qubes[0].Class);
        Assert.Equal("red", inv.Get("a").Label);
        Assert.Equal("label-1", inv.Get("a").Properties["label"]);
        Assert.Equal("yellow", inv.Get("b").Label);
        Assert.Equal("yellow", inv.Get("c").Label);
        Assert.Equal(4, inv.Get("d").Qid); // no qid property: taken from id="domain-4"
        Assert.Empty(inv.Get("a").Features);
    }

    [Theory]
    [InlineData("<qubes><domains><domain class=\"AppVM\">\n<properties>\n</domains></qubes>", "line 3")]
    [InlineData("not xml at all", "line 1")]
    [InlineData("<?xml version='1.0'?>\n<firewall version=\"2\"/>", "not <qubes>")]
    [InlineData("<qubes><domains>\n<domain class=\"AppVM\"><properties><property name=\"qid\">1</property></properties></domain></domains></qubes>", "line 2")]
    [InlineData("<qubes><domains>\n<domain class=\"AppVM\"><properties><property name=\"qid\">1</property><property name=\"name\">a</property></properties></domain>\n<domain class=\"AppVM\"><properties><property name=\"qid\">2</property><property name=\"name\">a</property></properties></domain></domains></qubes>", "twice")]
    [InlineData("<!DOCTYPE qubes [<!ENTITY x \"y\">]><qubes/>", "DTD")]
    public void Malformed_qubes_xml_is_reported_with_path_and_line(string content, string expected)
    {
        var path = Write(content);
        var e = Assert.Throws<QubesFirewallException>(() => QubesXml.Load(path));
        Assert.Equal("InvalidQubesXml", e.ErrorId);
        Assert.Contains(path, e.Message);
        Assert.Contains(expected, e.Message);
    }

    [Fact]
    public void Missing_file_is_reported()
    {
        var e = Assert.Throws<QubesFirewallException>(() => QubesXml.Load(Path.Combine(_dir, "nope.xml")));
        Assert.Equal("InvalidQubesXml", e.ErrorId);
        Assert.Equal(FailureKind.ObjectNotFound, e.Kind);
    }

    // ------------------------------------------------------------------ features

    private static string InsertAfterLine(string text, string domainName, string anchorLine, params string[] newLines)
    {
        var lines = text.Split('\n').ToList();
        var start = lines.FindIndex(l => l.Contains($"<property name=\"name\">{domainName}</property>"));
        var at = lines.FindIndex(start, l => l.Trim() == anchorLine);
        Assert.True(start >= 0 && at > start);
        lines.InsertRange(at + 1, newLines);
        return string.Join('\n', lines);
    }

    [Fact]
    public void SetFeature_adds_one_element_and_changes_nothing_else()
    {
        var path = CopySample();
        var before = File.ReadAllText(path);

        Assert.True(QubesXml.SetFeature(path, "sys-net", "qubesfirewall.forward.0", "tcp 443 to work"));

        var expected = InsertAfterLine(before, "sys-net", "<feature name=\"servicevm\">1</feature>",
            "        <feature name=\"qubesfirewall.forward.0\">tcp 443 to work</feature>");
        Assert.Equal(expected, File.ReadAllText(path));
        Assert.Equal("tcp 443 to work", QubesXml.Load(path).Get("sys-net").Features["qubesfirewall.forward.0"]);

        Assert.True(QubesXml.RemoveFeature(path, "sys-net", "qubesfirewall.forward.0"));
        Assert.Equal(before, File.ReadAllText(path));
    }

    [Fact]
    public void SetFeature_on_a_qube_without_features_round_trips_byte_for_byte()
    {
        var path = CopySample();
        var before = File.ReadAllBytes(path);

        Assert.True(QubesXml.SetFeature(path, "vault", "qubesfirewall.link.vault", "tcp:22"));
        var after = File.ReadAllText(path);
        Assert.Contains("      <features>\n        <feature name=\"qubesfirewall.link.vault\">tcp:22</feature>\n      </features>\n", after);

        // Everything but the feature is the same XML.
        var docBefore = XDocument.Parse(File.ReadAllText(SampleXml));
        var docAfter = XDocument.Parse(after);
        docAfter.Descendants("feature").Single(f => (string?)f.Attribute("name") == "qubesfirewall.link.vault").Remove();
        Assert.True(XNode.DeepEquals(docBefore, docAfter));

        Assert.True(QubesXml.RemoveFeature(path, "vault", "qubesfirewall.link.vault"));
        Assert.Equal(before, File.ReadAllBytes(path)); // <features/> again
    }

    [Fact]
    public void SetFeature_same_value_writes_nothing_and_new_value_replaces()
    {
        var path = CopySample();
        var before = File.ReadAllBytes(path);
        Assert.False(QubesXml.SetFeature(path, "sys-firewall", "servicevm", "1"));
        Assert.Equal(before, File.ReadAllBytes(path));

        Assert.True(QubesXml.SetFeature(path, "sys-firewall", "servicevm", "yes please"));
        Assert.Equal("yes please", QubesXml.Load(path).Get("sys-firewall").Features["servicevm"]);
        Assert.True(QubesXml.SetFeature(path, "sys-firewall", "servicevm", "1"));
        Assert.Equal(before, File.ReadAllBytes(path));
    }

    [Fact]
    public void Empty_feature_value_is_stored_as_qubesd_stores_it()
    {
        var path = CopySample();
        Assert.True(QubesXml.SetFeature(path, "sys-whonix", "ipv6", ""));
        Assert.Contains("<feature name=\"ipv6\"></feature>", File.ReadAllText(path));
        Assert.Equal("", QubesXml.Load(path).Get("sys-whonix").Features["ipv6"]);
        Assert.False(QubesXml.SetFeature(path, "sys-whonix", "ipv6", ""));
    }

    [Fact]
    public void Features_change_IPv6_of_the_whole_chain()
    {
        var path = CopySample();
        QubesXml.SetFeature(path, "sys-net", "ipv6", "1");
        QubesXml.SetFeature(path, "sys-whonix", "ipv6", "");
        var inv = QubesXml.Load(path);
        Assert.Equal("fd09:24ef:4179::a89:5", inv.Get("sys-net").IPv6);
        Assert.Equal("fd09:24ef:4179::a8a:ab5", inv.Get("sys-firewall").IPv6);
        Assert.Equal("fd09:24ef:4179::a89:b", inv.Get("work").IPv6);
        Assert.Null(inv.Get("sys-whonix").IPv6);
        Assert.Null(inv.Get("anon-whonix").IPv6);
        Assert.Null(inv.Get("vault").IPv6);
        Assert.Null(inv.Get("fedora-42-xfce").IPv6);
    }

    [Fact]
    public void RemoveFeature_of_absent_feature_is_false_and_writes_nothing()
    {
        var path = CopySample();
        var before = File.ReadAllBytes(path);
        var stamp = File.GetLastWriteTimeUtc(path);
        Assert.False(QubesXml.RemoveFeature(path, "work", "nothing-here"));
        Assert.Equal(before, File.ReadAllBytes(path));
        Assert.Equal(stamp, File.GetLastWriteTimeUtc(path));
    }

    [Fact]
    public void SetFeatures_changes_several_in_one_write()
    {
        var path = CopySample();
        Assert.True(QubesXml.SetFeatures(path, "work", [new("a", "1"), new("b", "2"), new("a", null)]));
        var f = QubesXml.Load(path).Get("work").Features;
        Assert.False(f.ContainsKey("a"));
        Assert.Equal("2", f["b"]);
    }

    [Theory]
    [InlineData("")]
    [InlineData("a b")]
    [InlineData("a/b")]
    [InlineData("a;b")]
    [InlineData("a=b")]
    [InlineData("ünï")]
    [InlineData("tab\tname")]
    [InlineData("a+b")]
    public void Invalid_feature_names_are_refused_and_the_file_is_untouched(string name)
    {
        var path = CopySample();
        var before = File.ReadAllBytes(path);
        var e = Assert.Throws<QubesFirewallException>(() => QubesXml.SetFeature(path, "work", name, "1"));
        Assert.Equal("InvalidFeatureName", e.ErrorId);
        Assert.Equal(FailureKind.InvalidArgument, e.Kind);
        Assert.Equal("InvalidFeatureName", Assert.Throws<QubesFirewallException>(() => QubesXml.RemoveFeature(path, "work", name)).ErrorId);
        Assert.Equal(before, File.ReadAllBytes(path));
        Assert.False(QubeFeature.IsValidName(name));
    }

    [Theory]
    [InlineData("a\nb")]
    [InlineData("tab\there")]
    [InlineData("cr\r")]
    [InlineData("café")]
    [InlineData("\u007f")]
    [InlineData("\u001f")]
    [InlineData("emoji \U0001F600")]
    public void Invalid_feature_values_are_refused_and_the_file_is_untouched(string value)
    {
        var path = CopySample();
        var before = File.ReadAllBytes(path);
        var e = Assert.Throws<QubesFirewallException>(() => QubesXml.SetFeature(path, "work", "qubesfirewall.x", value));
        Assert.Equal("InvalidFeatureValue", e.ErrorId);
        Assert.DoesNotContain("\n", e.Message);
        Assert.Equal(before, File.ReadAllBytes(path));
        Assert.False(QubeFeature.IsValidValue(value));
    }

    [Fact]
    public void Printable_ascii_values_are_accepted_including_xml_specials()
    {
        var path = CopySample();
        const string value = " !\"#$%&'()*+,-./09:;<=>?@AZ[\\]^_`az{|}~";
        Assert.True(QubeFeature.IsValidValue(value));
        Assert.True(QubesXml.SetFeature(path, "work", "x", value));
        Assert.Contains("<feature name=\"x\"> !\"#$%&amp;'()*+,-./09:;&lt;=&gt;?@AZ[\\]^_`az{|}~</feature>", File.ReadAllText(path));
        Assert.Equal(value, QubesXml.Load(path).Get("work").Features["x"]);
    }

    [Fact]
    public void Unknown_or_invalid_qube_is_refused_and_the_file_is_untouched()
    {
        var path = CopySample();
        var before = File.ReadAllBytes(path);
        var e = Assert.Throws<QubesFirewallException>(() => QubesXml.SetFeature(path, "nosuchqube", "x", "1"));
        Assert.Equal("QubeNotFound", e.ErrorId);
        Assert.Equal(FailureKind.ObjectNotFound, e.Kind);
        Assert.Equal("InvalidQubeName", Assert.Throws<QubesFirewallException>(() => QubesXml.SetFeature(path, "work;reboot", "x", "1")).ErrorId);
        Assert.Equal(before, File.ReadAllBytes(path));
    }

    [Fact]
    public void Writing_to_a_malformed_file_fails_and_leaves_it_alone()
    {
        var path = Write("<qubes><domains>\n<domain class=\"AppVM\"><properties><property name=\"name\">a</property>");
        var before = File.ReadAllBytes(path);
        var e = Assert.Throws<QubesFirewallException>(() => QubesXml.SetFeature(path, "a", "x", "1"));
        Assert.Equal("InvalidQubesXml", e.ErrorId);
        Assert.Equal(before, File.ReadAllBytes(path));
    }

    [Fact]
    public void A_declaration_and_foreign_content_are_kept()
    {
        var path = Write("""
            <?xml version='1.0' encoding='UTF-8'?>
            <qubes>
              <properties/>
              <domains>
                <domain id="domain-1" class="AppVM" extra="x&quot;y">
                  <properties>
                    <property name="name">a</property>
                    <property name="qid">1</property>
                  </properties>
                  <features>
                    <feature name="spaces">  two  </feature>
                  </features>
                  <custom-thing attr="1">text &amp; more</custom-thing>
                </domain>
              </domains>
            </qubes>

            """.Replace("\r\n", "\n"));
        Assert.True(QubesXml.SetFeature(path, "a", "x", "1"));
        var text = File.ReadAllText(path);
        Assert.StartsWith("<?xml version='1.0' encoding='UTF-8'?>\n<qubes>\n", text);
        Assert.Contains("<domain id=\"domain-1\" class=\"AppVM\" extra=\"x&quot;y\">", text);
        Assert.Contains("<feature name=\"spaces\">  two  </feature>\n        <feature name=\"x\">1</feature>\n", text);
        Assert.Contains("<custom-thing attr=\"1\">text &amp; more</custom-thing>", text);
        Assert.Equal("  two  ", QubesXml.Load(path).Get("a").Features["spaces"]);
    }

    [Fact]
    public void Concurrent_writers_lose_nothing()
    {
        var path = CopySample();
        using var start = new Barrier(2);
        var errors = new List<Exception>();
        var threads = Enumerable.Range(0, 2).Select(t => new Thread(() =>
        {
            try
            {
                start.SignalAndWait();
                for (var i = 0; i < 50; i++)
                    QubesXml.SetFeature(path, t == 0 ? "work" : "personal", $"qubesfirewall.t{t}.f{i}", $"value {t} {i}");
            }
            catch (Exception e)
            {
                lock (errors) errors.Add(e);
            }
        })).ToList();
        threads.ForEach(t => t.Start());
        threads.ForEach(t => t.Join());
        Assert.Empty(errors);

        var inv = QubesXml.Load(path);
        var work = inv.Get("work").Features;
        var personal = inv.Get("personal").Features;
        for (var i = 0; i < 50; i++)
        {
            Assert.Equal($"value 0 {i}", work[$"qubesfirewall.t0.f{i}"]);
            Assert.Equal($"value 1 {i}", personal[$"qubesfirewall.t1.f{i}"]);
        }
        Assert.Equal(50, work.Count(f => f.Key.StartsWith("qubesfirewall.t", StringComparison.Ordinal)));
        Assert.Equal(50, personal.Count(f => f.Key.StartsWith("qubesfirewall.t", StringComparison.Ordinal)));
        Assert.Equal(102, work.Count + personal.Count); // and the agent each of them records
        Assert.Empty(Directory.GetFiles(_dir, "*.tmp")); // no temp file left behind
    }

    [Fact]
    public void Concurrent_writers_on_one_qube_lose_nothing()
    {
        var path = CopySample();
        Parallel.For(0, 2, t =>
        {
            for (var i = 0; i < 50; i++) QubesXml.SetFeature(path, "vault", $"f{t}-{i}", "1");
        });
        Assert.Equal(100, QubesXml.Load(path).Get("vault").Features.Count);
    }

    // ------------------------------------------------------------------ properties

    [Fact]
    public void SetProperty_netvm_in_qubesd_order_then_reset_restores_the_file()
    {
        var path = CopySample();
        var before = File.ReadAllText(path);

        Assert.True(QubesXml.SetProperty(path, "work", "netvm", "sys-firewall"));
        var lines = before.Split('\n').ToList();
        var start = lines.FindIndex(l => l.Contains("<property name=\"name\">work</property>"));
        var at = lines.FindIndex(start, l => l.Contains("<property name=\"template\">"));
        lines.Insert(at, "        <property name=\"netvm\">sys-firewall</property>"); // stage 4, before template
        Assert.Equal(string.Join('\n', lines), File.ReadAllText(path));

        var work = QubesXml.Load(path).Get("work");
        Assert.Equal("sys-firewall", work.NetVM);
        Assert.Equal(NetVmSource.Explicit, work.NetVmSource);

        Assert.False(QubesXml.SetProperty(path, "work", "netvm", "sys-firewall"));
        Assert.True(QubesXml.ResetProperty(path, "work", "netvm"));
        Assert.Equal(before, File.ReadAllText(path));
        Assert.False(QubesXml.ResetProperty(path, "work", "netvm"));
        Assert.Equal(NetVmSource.Default, QubesXml.Load(path).Get("work").NetVmSource);
    }

    [Fact]
    public void SetProperty_stores_qubesd_forms()
    {
        var path = CopySample();
        Assert.False(QubesXml.SetProperty(path, "vault", "netvm", "")); // already empty: unchanged
        Assert.True(QubesXml.SetProperty(path, "vault", "autostart", "yes"));
        Assert.True(QubesXml.SetProperty(path, "vault", "memory", "800"));
        Assert.True(QubesXml.SetProperty(path, "vault", "label", "purple"));
        var vault = QubesXml.Load(path).Get("vault");
        Assert.Equal("True", vault.Properties["autostart"]);
        Assert.Equal("800", vault.Properties["memory"]);
        Assert.Equal("purple", vault.Label);
        Assert.True(QubesXml.SetProperty(path, "work", "netvm", "sys-whonix"));
        Assert.Equal("sys-whonix", QubesXml.Load(path).Get("work").NetVM);
    }

    [Theory]
    [InlineData("work", "netvm", "vault", "NotANetworkQube")]
    [InlineData("work", "netvm", "nosuchqube", "QubeNotFound")]
    [InlineData("work", "netvm", "bad;name", "InvalidQubeName")]
    [InlineData("sys-net", "netvm", "sys-firewall", "NetVmLoop")]
    [InlineData("sys-net", "netvm", "sys-net", "NetVmLoop")]
    [InlineData("dom0", "netvm", "sys-net", "PropertyNotApplicable")]
    [InlineData("work", "name", "job", "PropertyReadOnly")]
    [InlineData("work", "qid", "99", "PropertyReadOnly")]
    [InlineData("work", "bad name", "x", "InvalidPropertyName")]
    [InlineData("work", "autostart", "maybe", "InvalidPropertyValue")]
    [InlineData("work", "memory", "lots", "InvalidPropertyValue")]
    [InlineData("work", "ip", "10.1.2", "InvalidPropertyValue")]
    [InlineData("work", "label", "pink", "InvalidPropertyValue")]
    [InlineData("work", "template", "", "InvalidPropertyValue")]
    [InlineData("work", "kernelopts", "a\nb", "InvalidPropertyValue")]
    [InlineData("sys-firewall", "provides_network", "False", "NetworkQubeInUse")]
    public void Invalid_property_changes_are_refused_and_the_file_is_untouched(string qube, string name, string value, string errorId)
    {
        var path = CopySample();
        var before = File.ReadAllBytes(path);
        Assert.Equal(errorId, Assert.Throws<QubesFirewallException>(() => QubesXml.SetProperty(path, qube, name, value)).ErrorId);
        Assert.Equal(before, File.ReadAllBytes(path));
    }

    [Fact]
    public void Properties_without_default_cannot_be_reset()
    {
        var path = CopySample();
        Assert.Equal("PropertyHasNoDefault", Assert.Throws<QubesFirewallException>(() => QubesXml.ResetProperty(path, "work", "template")).ErrorId);
        Assert.Equal("PropertyReadOnly", Assert.Throws<QubesFirewallException>(() => QubesXml.ResetProperty(path, "work", "qid")).ErrorId);
    }
}

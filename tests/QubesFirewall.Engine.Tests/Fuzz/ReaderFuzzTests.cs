using System.Globalization;
using System.Security;
using System.Text;
using CsCheck;
using QubesFirewall.Engine.AdminApi;
using QubesFirewall.Engine.Formats;
using QubesFirewall.Engine.Model;
using Xunit.Abstractions;

namespace QubesFirewall.Engine.Tests.Fuzz;

/// <summary>
/// The readers of what comes from disk or from qubesd, fed random and mutated input: firewall.xml
/// (<see cref="FirewallXml.Parse"/>), qubes.xml (<see cref="QubesXml.Parse"/> and a feature write on what
/// loads), qubesd's replies (<see cref="QubesdClient.ParseReply"/> on random bytes, and the
/// <see cref="AdminApiReplies"/> content parsers). None may fail with anything but a
/// <see cref="QubesFirewallException"/> carrying an id and a message; whatever loads must be usable.
/// </summary>
[System.Runtime.Versioning.UnsupportedOSPlatform("windows")]
public sealed class ReaderFuzzTests(ITestOutputHelper output) : IDisposable
{
    private static readonly DateTimeOffset Now = DateTimeOffset.FromUnixTimeSeconds(1_800_000_000);
    private readonly string _dir = Fuzz.NewDirectory("qfw-fuzz-");

    public void Dispose()
    {
        try { Directory.Delete(_dir, recursive: true); } catch (IOException) { }
    }

    // ------------------------------------------------------------------ firewall.xml

    private static readonly Gen<string> ValidFirewallXml =
        RuleTextPropertyTests.ValidRule.Array[0, 8].Select(rules => FirewallXml.Render(rules.Select(r => RuleText.Parse(r.Line, Now)), Now));

    /// <summary>Values worth putting into a property or attribute: payloads, grammar pieces, XML specials (escaped or not).</summary>
    private static readonly Gen<string> XmlValue = Gen.OneOf(
        Gens.Payload, Gens.AnyString, Gens.Digits, Gens.Lower,
        Gen.Const(""), Gen.Const(" "), Gen.Const("accept"), Gen.Const("drop"), Gen.Const("forward"), Gen.Const("tcp"), Gen.Const("icmp"), Gen.Const("dns"),
        Gen.Const("1.2.3.4/33"), Gen.Const("1.2.3.999"), Gen.Const("::1/129"), Gen.Const("65536"), Gen.Const("10-5"), Gen.Const("999"), Gen.Const("-1"),
        Gen.Const("&amp;"), Gen.Const("&#0;"), Gen.Const("&#x1F;"), Gen.Const("&lt;x/&gt;"), Gen.Const("&undefined;"), Gen.Const("]]>"), Gen.Const("<![CDATA[x]]>"),
        Gens.AnyString.Select(s => SecurityElement.Escape(s) ?? ""));

    private static readonly Gen<string> PropertyName = Gen.OneOf(
        Gen.Const("action"), Gen.Const("proto"), Gen.Const("dsthost"), Gen.Const("dstports"), Gen.Const("icmptype"), Gen.Const("specialtarget"),
        Gen.Const("expire"), Gen.Const("comment"), Gen.Const("forward"), Gens.Lower, Gens.AnyString.Select(s => SecurityElement.Escape(s) ?? ""));

    /// <summary>Structure-aware edits: property values and names, extra properties, versions, DTDs, v1 files, raw text edits.</summary>
    private static readonly Gen<string> MutatedFirewallXml = Gen.OneOf(
        // a property value replaced (escaped or raw)
        from xml in ValidFirewallXml
        from value in XmlValue
        from pick in Gen.Int[0, 1000]
        select ReplaceNth(xml, "\">", "</property>", pick, value),
        // a property renamed
        from xml in ValidFirewallXml
        from name in PropertyName
        from pick in Gen.Int[0, 1000]
        select ReplaceNth(xml, "<property name=\"", "\"", pick, name),
        // extra properties in a rule
        from xml in ValidFirewallXml
        from name in PropertyName
        from value in XmlValue
        from twice in Gen.Bool
        let prop = $"<property name=\"{name}\">{value}</property>"
        select xml.Replace("<properties>", "<properties>" + prop + (twice ? prop : ""), StringComparison.Ordinal),
        // another version, a DTD, an entity, a different root
        from xml in ValidFirewallXml
        from version in Gen.OneOf(Gen.Const("1"), Gen.Const("3"), Gen.Const(""), Gen.Const("2 "), Gens.Digits, Gens.AnyString.Select(s => SecurityElement.Escape(s) ?? ""))
        from prolog in Gen.OneOf(Gen.Const(""), Gen.Const("<?xml version=\"1.0\"?>\n"), Gen.Const("<!DOCTYPE firewall [<!ENTITY x \"y\">]>\n"),
            Gen.Const("<!DOCTYPE firewall SYSTEM \"file:///etc/passwd\">\n"), Gen.Const("\uFEFF"), Gen.Const("<!-- c -->"))
        select prolog + xml.Replace("version=\"2\"", $"version=\"{version}\"", StringComparison.Ordinal),
        // a version 1 file with random attributes
        from policy in Gen.OneOf(Gen.Const("allow"), Gen.Const("deny"), Gen.Const(""), XmlValue)
        from dns in Gen.OneOf(Gen.Const("allow"), Gen.Const("deny"), XmlValue)
        from rules in Gen.Select(XmlValue, XmlValue, XmlValue, XmlValue, (a, m, p, t) => (a, m, p, t)).Array[0, 4]
        from proto in Gen.OneOf(Gen.Const("tcp"), Gen.Const("udp"), Gen.Const("any"), Gen.Const("icmp"), XmlValue)
        select $"<QubesFirewallRules policy=\"{Attr(policy)}\" dns=\"{Attr(dns)}\" icmp=\"allow\">" +
               string.Concat(rules.Select(r => $"<rule address=\"{Attr(r.a)}\" netmask=\"{Attr(r.m)}\" port=\"{Attr(r.p)}\" toport=\"{Attr(r.t)}\" proto=\"{Attr(proto)}\"/>")) +
               "</QubesFirewallRules>",
        // raw edits anywhere
        Gens.Mutate(ValidFirewallXml, 3, Gen.OneOf(Gen.String[Gen.Char["<>&\"'/=!?[]-"], 1, 3], Gens.Payload)),
        Gens.AnyString);

    private static string Attr(string s) => s.Replace("&", "&amp;", StringComparison.Ordinal).Replace("\"", "&quot;", StringComparison.Ordinal).Replace("<", "&lt;", StringComparison.Ordinal);

    private static string ReplaceNth(string text, string before, string after, int pick, string value)
    {
        var starts = new List<int>();
        for (var i = text.IndexOf(before, StringComparison.Ordinal); i >= 0; i = text.IndexOf(before, i + 1, StringComparison.Ordinal)) starts.Add(i + before.Length);
        if (starts.Count == 0) return text;
        var start = starts[pick % starts.Count];
        var end = text.IndexOf(after, start, StringComparison.Ordinal);
        return end < 0 ? text : text[..start] + value + text[end..];
    }

    /// <summary>Checks one firewall.xml; true when it loaded.</summary>
    internal static bool CheckFirewallXml(byte[] bytes)
    {
        FirewallDocument doc;
        try
        {
            doc = FirewallXml.Parse(new MemoryStream(bytes), "fuzz/firewall.xml");
        }
        catch (QubesFirewallException ex)
        {
            Assert.Equal("InvalidFirewallXml", ex.ErrorId);
            Assert.StartsWith("Cannot read fuzz/firewall.xml", ex.Message, StringComparison.Ordinal);
            return false;
        }
        // Whatever loads can be shown and checked.
        foreach (var rule in doc.Rules)
        {
            _ = rule.Text;
            _ = rule.IsCatchAll;
            _ = FirewallXml.StoredProperties(rule).ToList();
        }
        string rendered;
        try
        {
            rendered = FirewallXml.Render(doc.Rules, Now);
        }
        catch (QubesFirewallException ex)
        {
            // Refused for writing: a clear error naming the problem, never a half-written file.
            Assert.False(string.IsNullOrWhiteSpace(ex.ErrorId));
            Assert.False(string.IsNullOrWhiteSpace(ex.Message));
            Assert.Contains(doc.Rules, r => !r.IsExpiredAt(Now) && !IsWritable(r));
            return true;
        }
        var bad = rendered.AsSpan().IndexOfAnyExceptInRange(' ', '~');
        while (bad >= 0 && rendered[bad] == '\n') { var next = rendered.AsSpan(bad + 1).IndexOfAnyExceptInRange(' ', '~'); bad = next < 0 ? -1 : bad + 1 + next; }
        Assert.True(bad < 0, bad < 0 ? "" : $"character {RuleGrammar.Describe(rendered[bad])} in the rendered file");
        var again = FirewallXml.Parse(new MemoryStream(Encoding.UTF8.GetBytes(rendered)), "rendered");
        Assert.Equal(doc.Rules.Where(r => !r.IsExpiredAt(Now)).Select(r => r.Text), again.Rules.Select(r => r.Text));
        Assert.Equal(rendered, FirewallXml.Render(again.Rules, Now));
        return true;
    }

    private static bool IsWritable(FirewallRule rule)
    {
        try
        {
            rule.Validate();
            return true;
        }
        catch (QubesFirewallException)
        {
            return false;
        }
    }

    [Fact]
    public void Firewall_xml_reader_refuses_bad_files_with_InvalidFirewallXml_and_what_loads_renders_or_is_refused_clearly()
    {
        var loaded = 0;
        var n = Fuzz.Check("firewall.xml: structured mutations", MutatedFirewallXml, 4000, xml => { if (CheckFirewallXml(Encoding.UTF8.GetBytes(xml))) loaded++; }, output.WriteLine, Fuzz.Show);
        var bytes = from xml in ValidFirewallXml
                    from flips in Gen.Select(Gen.Int[0, int.MaxValue], Gen.Byte, (at, b) => (at, b)).Array[1, 4]
                    select Flip(Encoding.UTF8.GetBytes(xml), flips);
        n += Fuzz.Check("firewall.xml: byte flips", bytes, 2000, b => { if (CheckFirewallXml(b)) loaded++; }, output.WriteLine, b => Fuzz.Show(Encoding.Latin1.GetString(b)));
        n += Fuzz.Check("firewall.xml: random bytes", Gen.Byte.Array[0, 200], 1000, b => { if (CheckFirewallXml(b)) loaded++; }, output.WriteLine, b => Convert.ToHexString(b));
        output.WriteLine($"  loaded {loaded} of {n}");
        // Both the refusal and the load-render-reload path must be reached, or half the contract goes untested.
        Assert.InRange(loaded, 1, n - 1);
    }

    [Fact]
    public void Firewall_xml_scanner_reads_what_the_xml_reader_reads_or_leaves_the_file_to_it()
    {
        // What qubesd and Render write takes the scanner's path...
        Fuzz.Check("firewall.xml: rendered files take the scanner", ValidFirewallXml, 500,
            xml => Assert.NotNull(FirewallXml.TryReadCanonical(Encoding.UTF8.GetBytes(xml))), output.WriteLine, Fuzz.Show);
        // ...and whatever the scanner reads, the XML reader reads the same; whatever it refuses is left to the XML reader.
        var scanned = 0;
        var left = 0;
        void Compare(byte[] bytes)
        {
            if (FirewallXml.TryReadCanonical(bytes) is not { } fast) { left++; return; }
            scanned++;
            var slow = FirewallXml.ParseXml(bytes, bytes.Length, "fuzz/firewall.xml");
            Assert.Equal((slow.Version, slow.FileExists), (fast.Version, fast.FileExists));
            Assert.Equal(slow.Rules.Select(Facts), fast.Rules.Select(Facts));
        }
        var n = Fuzz.Check("firewall.xml: scanner against the XML reader", MutatedFirewallXml, 3000, xml => Compare(Encoding.UTF8.GetBytes(xml)), output.WriteLine, Fuzz.Show);
        var bytes = from xml in ValidFirewallXml
                    from flips in Gen.Select(Gen.Int[0, int.MaxValue], Gen.Byte, (at, b) => (at, b)).Array[1, 4]
                    select Flip(Encoding.UTF8.GetBytes(xml), flips);
        n += Fuzz.Check("firewall.xml: scanner against the XML reader, byte flips", bytes, 2000, Compare, output.WriteLine, b => Fuzz.Show(Encoding.Latin1.GetString(b)));
        output.WriteLine($"  scanned {scanned}, left to the XML reader {left}, of {n}");
        Assert.InRange(scanned, 1, n - 1);
    }

    // Everything a rule read from a file holds, as one comparable string.
    private static string Facts(FirewallRule r) =>
        string.Join("|", r.Action, r.Protocol, r.DstHost, r.DstHost?.Kind, r.DstHost?.PrefixLength, r.RawDstHost, r.DstPorts, r.IcmpType, r.SpecialTarget, r.Expire,
            r.Comment, string.Join(",", r.UnknownProperties), string.Join(",", r.Problems));

    private static byte[] Flip(byte[] bytes, (int At, byte Value)[] flips)
    {
        foreach (var (at, value) in flips)
            if (bytes.Length > 0) bytes[at % bytes.Length] = value;
        return bytes;
    }

    // ------------------------------------------------------------------ qubes.xml

    private static readonly string SampleQubesXml = File.ReadAllText(Path.Combine(OfflineRootTests.SamplePath(), "qubes.xml"));

    private static readonly Gen<string> QubeNameLike = Gen.OneOf(
        Gen.Const("work"), Gen.Const("sys-net"), Gen.Const("sys-firewall"), Gen.Const("dom0"), Gen.Const("none"), Gen.Const(""), Gen.Const("default"),
        Gen.Const("Domain-0"), Gen.Const("x-dm"), Gens.Lower, XmlValue);

    private static readonly Gen<string> MutatedQubesXml = Gen.OneOf(
        // a property or feature value replaced
        from value in Gen.OneOf(XmlValue, QubeNameLike)
        from pick in Gen.Int[0, 10000]
        select ReplaceNth(SampleQubesXml, "\">", "</", pick, SecurityElement.Escape(value) ?? ""),
        // raw value, not escaped
        from value in XmlValue
        from pick in Gen.Int[0, 10000]
        select ReplaceNth(SampleQubesXml, "\">", "</", pick, value),
        // an attribute changed (class, id, name, ref, color)
        from value in Gen.OneOf(XmlValue.Select(Attr), Gen.Const("AppVM"), Gen.Const("DispVM"), Gen.Const("TemplateVM"), Gen.Const("AdminVM"), Gen.Const("RemoteVM"), Gen.Const("domain-1"))
        from pick in Gen.Int[0, 10000]
        select ReplaceNth(SampleQubesXml, "=\"", "\"", pick, value),
        // a netvm, template, default_netvm or label pointing elsewhere
        from name in Gen.OneOf(Gen.Const("netvm"), Gen.Const("template"), Gen.Const("default_netvm"), Gen.Const("label"), Gen.Const("qid"), Gen.Const("name"),
            Gen.Const("ip"), Gen.Const("ip6"), Gen.Const("provides_network"), Gen.Const("dispid"), Gen.Const("default_dispvm"))
        from value in QubeNameLike
        from pick in Gen.Int[0, 10000]
        select ReplaceNth(SampleQubesXml, $"<property name=\"{name}\">", "</property>", pick, SecurityElement.Escape(value) ?? ""),
        // raw edits anywhere
        Gens.Mutate(Gen.Const(SampleQubesXml), 3, Gen.OneOf(Gen.String[Gen.Char["<>&\"'/=!?[]-"], 1, 3], Gens.Payload)),
        Gens.AnyString);

    [Fact]
    public void Qubes_xml_reader_refuses_bad_files_clearly_and_what_loads_is_usable_and_writable()
    {
        Directory.CreateDirectory(_dir);
        var writes = 0;
        var refusedWrites = 0;
        var loaded = 0;
        var n = Fuzz.Check("qubes.xml: mutations", Gen.Select(MutatedQubesXml, Gen.Int[0, 1000], (xml, pick) => (xml, pick)), 800, t =>
        {
            var (xml, pick) = t;
            QubesInventory inventory;
            try
            {
                inventory = QubesXml.Parse(xml, "fuzz/qubes.xml");
            }
            catch (QubesFirewallException ex)
            {
                Assert.False(string.IsNullOrWhiteSpace(ex.ErrorId));
                Assert.False(string.IsNullOrWhiteSpace(ex.Message));
                return;
            }
            loaded++;
            AssertUsable(inventory, xml);
            // One in five: write a feature into what loaded (a locked atomic rewrite): done, or refused clearly.
            if (pick % 5 != 0 || inventory.Qubes.Count == 0) return;
            var qube = inventory.Qubes[pick % inventory.Qubes.Count].Name;
            var path = Path.Combine(_dir, "qubes.xml");
            File.WriteAllText(path, xml);
            try
            {
                QubesXml.SetFeature(path, qube, "qubesfirewall.fuzz", "value " + pick.ToString(CultureInfo.InvariantCulture));
                writes++;
            }
            catch (QubesFirewallException ex)
            {
                refusedWrites++;
                Assert.False(string.IsNullOrWhiteSpace(ex.Message));
                Assert.Equal(xml, File.ReadAllText(path)); // refused: untouched
                return;
            }
            var reloaded = QubesXml.Load(path);
            Assert.Equal("value " + pick.ToString(CultureInfo.InvariantCulture), reloaded.Get(qube).Features["qubesfirewall.fuzz"]);
            Assert.Equal(inventory.Qubes.Select(q => q.Name), reloaded.Qubes.Select(q => q.Name));
        }, output.WriteLine, t => Fuzz.Show(t.xml.Length > 400 ? t.xml[..400] + "..." : t.xml));
        output.WriteLine($"  loaded {loaded} of {n}; feature writes into what loaded: {writes} done, {refusedWrites} refused");
        Assert.InRange(loaded, 1, n - 1);
        Assert.True(writes > 0, "no feature write into a loaded file succeeded");
    }

    /// <summary>
    /// What the reader returned, checked against the XML itself (read here with XDocument, not with the
    /// reader under test): one qube per domain element with its name property, names unique and valid
    /// Qubes names, every netvm, template and default_netvm a qube of the file, every address an address.
    /// </summary>
    private static void AssertUsable(QubesInventory inventory, string xml)
    {
        var names = System.Xml.Linq.XDocument.Parse(xml, System.Xml.Linq.LoadOptions.PreserveWhitespace).Descendants("domain")
            .Select(d => d.Element("properties")?.Elements("property").FirstOrDefault(p => (string?)p.Attribute("name") == "name")?.Value
                         ?? ((string?)d.Attribute("class") == "AdminVM" ? "dom0" : null)) // dom0 carries no name property
            .ToList();
        Assert.Equal(names, inventory.Qubes.Select(q => q.Name));
        Assert.Equal(inventory.Qubes.Count, inventory.Qubes.Select(q => q.Name).Distinct(StringComparer.Ordinal).Count());
        foreach (var q in inventory.Qubes)
        {
            Assert.True(QubesFirewall.Engine.Validation.QubeName.IsValid(q.Name) || q.Name == "dom0", $"qube name {Fuzz.Show(q.Name)}");
            Assert.True(q.NetVM is null || inventory.Qubes.Any(o => o.Name == q.NetVM), $"{q.Name}: netvm {Fuzz.Show(q.NetVM)} is no qube");
            Assert.True(q.Template is null || inventory.Qubes.Any(o => o.Name == q.Template), $"{q.Name}: template {Fuzz.Show(q.Template)} is no qube");
            Assert.True(q.IP is null || System.Net.IPAddress.TryParse(q.IP, out var a) && a.AddressFamily == System.Net.Sockets.AddressFamily.InterNetwork && a.ToString() == q.IP,
                $"{q.Name}: ip {Fuzz.Show(q.IP)}");
            Assert.True(q.IPv6 is null || System.Net.IPAddress.TryParse(q.IPv6, out var b) && b.AddressFamily == System.Net.Sockets.AddressFamily.InterNetworkV6,
                $"{q.Name}: ip6 {Fuzz.Show(q.IPv6)}");
            _ = (q.Label, q.Class, q.ProvidesNetwork, q.DispId);
            _ = q.Features.Count + q.Properties.Count + q.Tags.Count;
            _ = inventory.UpstreamOf(q.Name).Count + inventory.ClientsOf(q.Name).Count;
        }
        Assert.True(inventory.DefaultNetVM is null || inventory.Qubes.Any(o => o.Name == inventory.DefaultNetVM), $"default_netvm {Fuzz.Show(inventory.DefaultNetVM)} is no qube");
    }

    // ------------------------------------------------------------------ declarations in qube features

    private static readonly Gen<string> ForwardValue = Gen.OneOf(
        from target in Gen.Int[1, 65535]
        from type in Gen.OneOf(Gen.Const("external"), Gen.Const("internal"))
        from allow in Gen.OneOf(Gen.Const(""), Gen.Const(" allow=192.168.1.0/24"), Gen.Const(" allow=10.0.0.0/8,192.168.1.7/32"))
        from iface in Gen.OneOf(Gen.Const(""), Gen.Const(" iface=ens6"), Gen.Const(" iface=wg0.1"))
        from expire in Gen.OneOf(Gen.Const(""), Gen.Const(" expire=1900000000"))
        from comment in Gen.OneOf(Gen.Const(""), Gen.Const(" comment=web; touch /tmp/x [a]"), Gen.Const(" comment=a b"))
        select $"target={target} type={type}{allow}{iface}{expire}{comment}",
        Gens.AnyString);

    [Fact]
    public void Forward_and_binding_declarations_in_features_parse_canonically_or_are_refused_clearly()
    {
        var parsed = 0;
        var gen = Gen.Select(
            Gen.OneOf(Gen.Const("qubesfirewall.forward.tcp.8080"), Gen.Const("qubesfirewall.forward.udp.53"),
                Gens.Mutate(Gen.Const("qubesfirewall.forward.tcp.8080"), 2, Gen.OneOf(Gens.Payload, Gen.Const("."), Gen.Const("0")))),
            Gen.OneOf(ForwardValue, Gens.Mutate(ForwardValue, 3)),
            (name, value) => (name, value));
        var n = Fuzz.Check("port forward declarations: feature name and value", gen, 6000, t =>
        {
            PortForward forward;
            try
            {
                forward = PortForwardFeature.Parse("work", t.name, t.value);
            }
            catch (QubesFirewallException ex)
            {
                Assert.Equal("InvalidPortForwardFeature", ex.ErrorId);
                Assert.DoesNotContain(ex.Message, c => c is < ' ' or '\x7f');
                return;
            }
            parsed++;
            // only the canonical spelling is read, so what is stored is what would be written
            Assert.Equal(t.name, forward.FeatureName);
            Assert.Equal(t.value, forward.FeatureValue);
        }, output.WriteLine, t => $"{Fuzz.Show(t.name)} = {Fuzz.Show(t.value)}");

        var bindingGen = Gen.Select(
            Gen.OneOf(Gen.Const("qubesfirewall.tcp.personal.22"), Gens.Mutate(Gen.Const("qubesfirewall.tcp.personal.22"), 2)),
            Gen.OneOf(Gen.Const(""), Gen.Const("local=2222"), Gen.Const("local=2222 permanent"), Gen.Const("permanent"), Gens.AnyString, Gens.Mutate(Gen.Const("local=2222 permanent"))),
            (name, value) => (name, value));
        n += Fuzz.Check("qubes.ConnectTCP declarations: feature name and value", bindingGen, 3000, t =>
        {
            try
            {
                var binding = TcpBindingFeature.Parse("work", t.name, t.value);
                Assert.Equal(t.name, binding.FeatureName);
                Assert.True(QubesFirewall.Engine.Validation.QubeName.IsValid(binding.To));
            }
            catch (QubesFirewallException ex)
            {
                Assert.False(string.IsNullOrWhiteSpace(ex.ErrorId));
                Assert.DoesNotContain(ex.Message, c => c is < ' ' or '\x7f');
            }
        }, output.WriteLine, t => $"{Fuzz.Show(t.name)} = {Fuzz.Show(t.value)}");
        output.WriteLine($"  forward declarations read: {parsed} of {n}");
        Assert.InRange(parsed, 101, n - 1);
    }

    // ------------------------------------------------------------------ Admin API replies

    private static readonly Gen<byte[]> Reply = Gen.OneOf(
        Gen.Byte.Array[0, 64],
        Gen.Byte.Array[0, 64].Select(b => (byte[])[(byte)'0', 0, .. b]),
        Gen.Byte.Array[0, 64].Select(b => (byte[])[(byte)'1', 0, .. b]),
        from fields in Gen.String[Gens.AnyChar, 0, 20].Array[0, 6]
        from end in Gen.Bool
        select (byte[])[(byte)'2', 0, .. Encoding.UTF8.GetBytes(string.Join('\0', fields) + (end ? "\0" : ""))],
        from fields in Gen.OneOf(Gen.Const("QubesVMNotFoundError"), Gen.Const("QubesFeatureNotFoundError"), Gen.Const("PermissionDenied"), Gen.Const("%s %r %d %%"), Gens.Lower).Array[1, 6]
        select (byte[])[(byte)'2', 0, .. Encoding.UTF8.GetBytes(string.Join('\0', fields) + "\0")]);

    [Fact]
    public void Reply_parser_returns_exactly_the_content_of_a_success_and_refuses_everything_else_clearly()
    {
        var successes = 0;
        var n = Fuzz.Check("qubesd reply: random bytes", Reply, 20000, reply =>
        {
            var success = reply.Length >= 2 && reply[0] == (byte)'0' && reply[1] == 0;
            if (success) successes++;
            try
            {
                var content = QubesdClient.ParseReply(reply, "admin.vm.firewall.Get", null, "work");
                Assert.True(success, "accepted a reply that is not a success");
                Assert.Equal(reply[2..], content);
            }
            catch (QubesFirewallException ex)
            {
                Assert.False(success, $"refused a success reply: {ex.Message}");
                Assert.False(string.IsNullOrWhiteSpace(ex.ErrorId));
                Assert.Contains("admin.vm.firewall.Get", ex.Message, StringComparison.Ordinal);
                if (reply.Length >= 2 && reply[0] == (byte)'2' && reply[1] == 0 && reply[^1] == 0 && ex is not QubesdException)
                    Assert.Equal("QubesdReplyTruncated", ex.ErrorId); // an exception reply with fewer than three fields
            }
        }, output.WriteLine, Convert.ToHexString);
        output.WriteLine($"  success replies {successes} of {n}");
        Assert.InRange(successes, 1, n - 1);
    }

    private static readonly Gen<string> ReplyText = Gen.OneOf(
        Gens.AnyString,
        Gen.OneOf(Gen.Const("work class=AppVM state=Running"), Gen.Const("dom0 class=AdminVM state=Running"), Gen.Const("netvm default=False type=vm sys-firewall"),
                Gen.Const("qid default=True type=int 3"), Gen.Const("action=accept dst4=1.2.3.4/32"), Gen.Const("action=drop"), Gen.Const("x"), Gen.Const("="),
                Gen.Const(" "), Gen.Const("\n"), Gen.Const("type="), Gen.Const("default="), Gen.Const("class="), Gen.Const("state="), Gens.Payload, Gens.Lower)
            .Array[0, 10].Select(parts => string.Join('\n', parts)),
        Gens.Mutate(Gen.Const("work class=AppVM state=Running\nsys-net class=AppVM state=Halted\n")),
        Gens.Mutate(Gen.Const("default=False type=vm sys-firewall")),
        Gens.Mutate(Gen.Const("action=accept dst4=10.0.0.0/8 proto=tcp dstports=443-443 comment=web\naction=drop\n")));

    [Fact]
    public void Reply_content_parsers_accept_or_refuse_clearly()
    {
        var firewalls = 0;
        var n = Fuzz.Check("qubesd reply content: List, GetAll, property, names, firewall", ReplyText, 6000, text =>
        {
            Try(() => AdminApiReplies.ParseVmList(text, "admin.vm.List (on dom0)"));
            Try(() => AdminApiReplies.ParseGetAll(text, "admin.vm.property.GetAll (on work)"));
            Try(() => AdminApiReplies.ParseProperty("netvm", text, "admin.vm.property.Get+netvm (on work)"));
            Try(() => AdminApiReplies.ParseNames(text, "admin.vm.feature.List (on work)"));
            var doc = Try(() => AdminApiReplies.ParseFirewall(text, "admin.vm.firewall.Get (on work)"));
            if (doc is null) return;
            firewalls++;
            foreach (var rule in doc.Rules) _ = rule.Text;
        }, output.WriteLine, Fuzz.Show);
        output.WriteLine($"  firewall replies read {firewalls} of {n}");
        Assert.InRange(firewalls, 1, n - 1);
    }

    private static T? Try<T>(Func<T> parse) where T : class
    {
        try
        {
            return parse();
        }
        catch (QubesFirewallException ex)
        {
            Assert.False(string.IsNullOrWhiteSpace(ex.ErrorId));
            Assert.False(string.IsNullOrWhiteSpace(ex.Message));
            return null;
        }
    }
}

using System.Globalization;
using System.Security;
using System.Text;
using QubesFirewall.Engine.Backends;
using QubesFirewall.Engine.Formats;
using QubesFirewall.Engine.Model;

namespace QubesFirewall.Engine.Tests;

/// <summary>Writes small qubes.xml files for port forward tests.</summary>
internal sealed class QubesXmlBuilder
{
    private readonly StringBuilder _domains = new();

    public QubesXmlBuilder Qube(string name, int qid, string? netvm, bool providesNetwork = false, string cls = "AppVM",
        string? template = null, int? dispid = null, IDictionary<string, string>? features = null, string[]? tags = null,
        IDictionary<string, string>? properties = null, bool agent = true)
    {
        var q = qid.ToString(CultureInfo.InvariantCulture);
        _domains.Append($"    <domain id=\"domain-{q}\" class=\"{cls}\">\n      <properties>\n");
        _domains.Append("        <property name=\"label\">red</property>\n");
        _domains.Append($"        <property name=\"name\">{name}</property>\n        <property name=\"qid\">{q}</property>\n");
        if (dispid is { } d) _domains.Append($"        <property name=\"dispid\">{d.ToString(CultureInfo.InvariantCulture)}</property>\n");
        if (providesNetwork) _domains.Append("        <property name=\"provides_network\">True</property>\n");
        if (cls != "TemplateVM") _domains.Append($"        <property name=\"netvm\">{netvm ?? ""}</property>\n");
        if (template is not null) _domains.Append($"        <property name=\"template\">{template}</property>\n");
        foreach (var (k, v) in properties ?? new Dictionary<string, string>())
            _domains.Append($"        <property name=\"{k}\">{SecurityElement.Escape(v)}</property>\n");
        _domains.Append("      </properties>\n      <features>\n");
        // as Install-QubeFirewallAgent leaves a qube (forwards and links go only through the agent); agent: false for a qube without it
        if (agent && cls != "TemplateVM" && features?.ContainsKey(Agent.AgentScript.VersionFeature) != true)
            _domains.Append($"        <feature name=\"{Agent.AgentScript.VersionFeature}\">{Agent.AgentScript.Version}</feature>\n");
        foreach (var (k, v) in features ?? new Dictionary<string, string>())
            _domains.Append($"        <feature name=\"{k}\">{SecurityElement.Escape(v)}</feature>\n");
        _domains.Append("      </features>\n      <tags>\n");
        foreach (var t in tags ?? []) _domains.Append($"        <tag name=\"{t}\"/>\n");
        _domains.Append("      </tags>\n    </domain>\n");
        return this;
    }

    public string Build(string defaultNetvm = "") =>
        "<qubes>\n  <labels>\n    <label id=\"label-1\" color=\"0xcc0000\">red</label>\n  </labels>\n" +
        $"  <properties>\n    <property name=\"default_netvm\">{defaultNetvm}</property>\n  </properties>\n  <domains>\n" +
        "    <domain id=\"domain-0\" class=\"AdminVM\">\n      <properties>\n        <property name=\"label\">red</property>\n      </properties>\n      <features/>\n      <tags/>\n    </domain>\n" +
        _domains + "  </domains>\n</qubes>\n";

    public QubesInventory Inventory(string defaultNetvm = "") => QubesXml.Parse(Build(defaultNetvm));

    /// <summary>sys-net (2) → sys-firewall (3) → work (11), personal (10); sys-vpn (4) behind sys-firewall serving vpn-app (8); vault without network.</summary>
    public static QubesXmlBuilder Standard() => new QubesXmlBuilder()
        .Qube("fedora-42", 1, null, cls: "TemplateVM", features: new Dictionary<string, string> { ["qubes-agent-version"] = "4.2.17" })
        .Qube("sys-net", 2, null, providesNetwork: true, template: "fedora-42")
        .Qube("sys-firewall", 3, "sys-net", providesNetwork: true, template: "fedora-42")
        .Qube("sys-vpn", 4, "sys-firewall", providesNetwork: true, template: "fedora-42")
        .Qube("vpn-app", 8, "sys-vpn", template: "fedora-42")
        .Qube("personal", 10, "sys-firewall", template: "fedora-42")
        .Qube("work", 11, "sys-firewall", template: "fedora-42")
        .Qube("untrusted", 12, "sys-firewall", template: "fedora-42")
        .Qube("vault", 13, null, template: "fedora-42");
}

/// <summary>A temporary offline root: the repository's sample, or a qubes.xml of the test's own.</summary>
internal sealed class TempRoot : IDisposable
{
    public TempRoot(string? qubesXml = null)
    {
        Path = System.IO.Path.Combine(System.IO.Path.GetTempPath(), "qfw-pf-" + Guid.NewGuid().ToString("N")[..10]);
        if (qubesXml is null) Copy(TempRoot.SamplePath(), Path);
        else
        {
            Directory.CreateDirectory(Path);
            File.WriteAllText(System.IO.Path.Combine(Path, "qubes.xml"), qubesXml);
        }
        Backend = new OfflineRoot(Path, () => Now);
    }

    public string Path { get; }

    public OfflineRoot Backend { get; }

    public static string SamplePath()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
            if (File.Exists(System.IO.Path.Combine(dir.FullName, "QubesFirewall.slnx"))) return System.IO.Path.Combine(dir.FullName, "examples", "qubes-root");
        throw new InvalidOperationException("repository root not found");
    }

    public DateTimeOffset Now { get; set; } = DateTimeOffset.FromUnixTimeSeconds(1800000000);

    public string StateFile(string qube, string rwPath) => Backend.QubeFilePath(qube, rwPath);

    private static void Copy(string from, string to)
    {
        Directory.CreateDirectory(to);
        foreach (var f in Directory.EnumerateFiles(from)) File.Copy(f, System.IO.Path.Combine(to, System.IO.Path.GetFileName(f)));
        foreach (var d in Directory.EnumerateDirectories(from)) Copy(d, System.IO.Path.Combine(to, System.IO.Path.GetFileName(d)));
    }

    public void Dispose()
    {
        Backend.Dispose();
        try { Directory.Delete(Path, recursive: true); } catch (IOException) { }
    }
}

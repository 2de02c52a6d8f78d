using System.Globalization;
using System.Text.RegularExpressions;
using System.Xml.Linq;
using QubesFirewall.Engine.Io;
using QubesFirewall.Engine.Model;
using QubesFirewall.Engine.Validation;
using static QubesFirewall.Engine.Validation.PrintableAscii;

namespace QubesFirewall.Engine.Formats;

/// <summary>Writing qubes.xml: one feature or property changed under the qubes.xml lock, the rest kept as it was.</summary>
public static partial class QubesXml
{
    // ---------------------------------------------------------------- writing: features

    /// <summary>Sets a qube's feature in qubes.xml (added last when new, as qubesd does). Returns whether the file changed.</summary>
    public static bool SetFeature(string qubesXmlPath, string qube, string name, string value) =>
        SetFeatures(qubesXmlPath, qube, [new KeyValuePair<string, string?>(name, value)]);

    /// <summary>Removes a qube's feature from qubes.xml. Returns whether it was there.</summary>
    public static bool RemoveFeature(string qubesXmlPath, string qube, string name) =>
        SetFeatures(qubesXmlPath, qube, [new KeyValuePair<string, string?>(name, null)]);

    /// <summary>
    /// Sets (non-null value) and removes (null value) several features of one qube in one locked
    /// read-modify-write; every name and value is checked before anything is written. Returns whether the file changed.
    /// </summary>
    public static bool SetFeatures(string qubesXmlPath, string qube, IEnumerable<KeyValuePair<string, string?>> changes)
    {
        var list = changes.ToList();
        foreach (var (name, value) in list)
        {
            QubeFeature.ValidateName(name);
            if (value is not null) QubeFeature.ValidateValue(name, value);
        }
        return Modify(qubesXmlPath, qube, (domain, _, _) =>
        {
            var changed = false;
            foreach (var (name, value) in list)
                changed |= value is null ? RemoveFeatureElement(domain, name) : SetFeatureElement(domain, name, value);
            return changed;
        });
    }

    private static bool SetFeatureElement(XElement domain, string name, string value)
    {
        var features = domain.Element("features");
        if (features is null)
        {
            features = new XElement("features");
            var after = domain.Element("properties");
            if (after is not null) after.AddAfterSelf(features); else domain.AddFirst(features);
        }
        var existing = features.Elements("feature").Where(f => (string?)f.Attribute("name") == name).ToList();
        if (existing.Count == 1 && existing[0].Value == value) return false;
        if (existing.Count == 0)
        {
            features.Add(new XElement("feature", new XAttribute("name", name)) { Value = value });
            return true;
        }
        // qubesd keeps one value per name (the last one it read); rewrite the first, drop the others.
        existing[0].Value = value;
        foreach (var dup in existing.Skip(1)) RemoveElement(dup);
        return true;
    }

    private static bool RemoveFeatureElement(XElement domain, string name)
    {
        var existing = domain.Elements("features").Elements("feature").Where(f => (string?)f.Attribute("name") == name).ToList();
        foreach (var f in existing) RemoveElement(f);
        return existing.Count > 0;
    }

    // ---------------------------------------------------------------- writing: properties

    private static readonly HashSet<string> ReadOnlyProperties = new(StringComparer.Ordinal) { "name", "qid", "uuid", "dispid" };
    private static readonly HashSet<string> NoDefaultProperties = new(StringComparer.Ordinal) { "label", "template" };
    private static readonly HashSet<string> QubeReferenceProperties = new(StringComparer.Ordinal)
        { "netvm", "template", "default_dispvm", "management_dispvm", "guivm", "audiovm" };
    private static readonly HashSet<string> BoolProperties = new(StringComparer.Ordinal)
        { "provides_network", "template_for_dispvms", "autostart", "debug", "include_in_backups", "installed_by_rpm", "updateable", "auto_cleanup" };
    private static readonly HashSet<string> IntProperties = new(StringComparer.Ordinal)
        { "memory", "maxmem", "stubdom_mem", "vcpus", "qrexec_timeout", "shutdown_timeout", "backup_timestamp" };
    // Properties qubesd loads in stage 4 (after every qube exists); it stores properties sorted by (stage, name).
    private static readonly HashSet<string> Stage4Properties = new(StringComparer.Ordinal)
        { "netvm", "template", "default_dispvm", "management_dispvm", "guivm", "audiovm", "kernelopts", "bootmode", "appvm_default_bootmode" };

    [GeneratedRegex(@"\A[a-zA-Z_][a-zA-Z0-9_]*\z", RegexOptions.CultureInvariant)]
    private static partial Regex PropertyNamePattern();

    /// <summary>
    /// Sets a qube property in qubes.xml (e.g. <c>netvm</c>; the empty value means "none" for
    /// references). Values are checked as qubesd would (names of existing qubes, a netvm that
    /// provides network and closes no loop, booleans, integers, addresses) and stored in qubesd's
    /// form (booleans as True/False). Returns whether the file changed.
    /// </summary>
    public static bool SetProperty(string qubesXmlPath, string qube, string name, string value)
    {
        ValidatePropertyName(name);
        if (value is null)
            throw QubesFirewallException.Invalid(ErrorIds.InvalidPropertyValue, $"The value of property '{name}' is missing.", value);
        var bad = FirstNonPrintable(value);
        if (bad >= 0)
            throw QubesFirewallException.Invalid(ErrorIds.InvalidPropertyValue,
                $"The value of property '{name}' contains {Describe(value[bad])} at position {bad}: only printable ASCII is accepted.", value);
        return Modify(qubesXmlPath, qube, (domain, inventory, target) =>
        {
            var stored = NormalizePropertyValue(inventory, target, name, value);
            var properties = domain.Element("properties");
            if (properties is null)
            {
                properties = new XElement("properties");
                domain.AddFirst(properties);
            }
            var existing = properties.Elements("property").Where(p => (string?)p.Attribute("name") == name).ToList();
            if (existing.Count == 1 && existing[0].Attribute("ref") is null && existing[0].Value == stored) return false;
            if (existing.Count == 0)
            {
                var element = new XElement("property", new XAttribute("name", name)) { Value = stored };
                var before = properties.Elements("property").FirstOrDefault(p => ComparePropertyOrder(name, (string?)p.Attribute("name") ?? "") < 0);
                if (before is not null) before.AddBeforeSelf(element); else properties.Add(element);
                return true;
            }
            existing[0].Attribute("ref")?.Remove();
            existing[0].Value = stored;
            foreach (var dup in existing.Skip(1)) RemoveElement(dup);
            return true;
        });
    }

    /// <summary>Resets a qube property to its default (removes it from qubes.xml, as qubesd does). Returns whether it was set.</summary>
    public static bool ResetProperty(string qubesXmlPath, string qube, string name)
    {
        ValidatePropertyName(name);
        if (NoDefaultProperties.Contains(name))
            throw new QubesFirewallException(ErrorIds.PropertyHasNoDefault, FailureKind.InvalidOperation, $"The property '{name}' has no default value; it cannot be reset, only set.", name);
        return Modify(qubesXmlPath, qube, (domain, _, _) =>
        {
            var existing = domain.Elements("properties").Elements("property").Where(p => (string?)p.Attribute("name") == name).ToList();
            foreach (var p in existing) RemoveElement(p);
            return existing.Count > 0;
        });
    }

    private static void ValidatePropertyName(string? name)
    {
        if (name is null || !PropertyNamePattern().IsMatch(name))
            throw QubesFirewallException.Invalid(ErrorIds.InvalidPropertyName, $"'{Printable(name)}' is not a valid property name (letters, digits and '_', not starting with a digit).", name);
        if (ReadOnlyProperties.Contains(name))
            throw new QubesFirewallException(ErrorIds.PropertyReadOnly, FailureKind.InvalidOperation, $"The property '{name}' is set once when the qube is created and cannot be changed.", name);
    }

    private static string NormalizePropertyValue(QubesInventory inventory, Qube target, string name, string value)
    {
        if (QubeReferenceProperties.Contains(name))
        {
            if (name == "netvm" && target.Class is QubeClass.AdminVM or QubeClass.RemoteVM)
                throw new QubesFirewallException(ErrorIds.PropertyNotApplicable, FailureKind.InvalidOperation, $"'{target.Name}' is an {target.Class}: it has no netvm.", target.Name);
            if (value.Length == 0)
            {
                if (name == "template")
                    throw QubesFirewallException.Invalid(ErrorIds.InvalidPropertyValue, $"'{target.Name}' needs a template; the template cannot be empty.", value);
                return "";
            }
            QubeName.Validate(value);
            var referenced = inventory.Find(value) ?? throw QubesInventory.NotFound(value, inventory.SourcePath);
            if (name == "netvm")
            {
                if (!referenced.ProvidesNetwork)
                    throw QubesFirewallException.Invalid(ErrorIds.NotANetworkQube, $"Cannot set netvm of '{target.Name}' to '{value}': the {value} qube does not provide network (provides_network is False).", value);
                if (referenced.Name == target.Name || inventory.UpstreamOf(referenced.Name).Any(q => q.Name == target.Name))
                    throw QubesFirewallException.Invalid(ErrorIds.NetVmLoop, $"Cannot set netvm of '{target.Name}' to '{value}': it would make a network loop.", value);
            }
            return referenced.Name;
        }
        if (name == "provides_network" && ParseBool(value) == false && inventory.ClientsOf(target.Name).Count > 0)
            throw new QubesFirewallException(ErrorIds.NetworkQubeInUse, FailureKind.InvalidOperation,
                $"'{target.Name}' is still the netvm of {string.Join(", ", inventory.ClientsOf(target.Name).Select(q => q.Name))}: change their netvm first.", target.Name);
        if (BoolProperties.Contains(name))
            return ParseBool(value) switch
            {
                true => "True",
                false => "False",
                null => throw QubesFirewallException.Invalid(ErrorIds.InvalidPropertyValue, $"'{value}' is not a boolean for property '{name}' (use True/False, 1/0, yes/no or on/off).", value),
            };
        if (IntProperties.Contains(name))
            return ParseInt(value)?.ToString(CultureInfo.InvariantCulture)
                ?? throw QubesFirewallException.Invalid(ErrorIds.InvalidPropertyValue, $"'{value}' is not an integer for property '{name}'.", value);
        if (name == "ip")
            return TryCanonicalIPv4(value) ?? throw QubesFirewallException.Invalid(ErrorIds.InvalidPropertyValue, $"'{value}' is not an IPv4 address.", value);
        if (name == "ip6")
            return TryCanonicalIPv6(value) ?? throw QubesFirewallException.Invalid(ErrorIds.InvalidPropertyValue, $"'{value}' is not an IPv6 address.", value);
        if (name == "label")
        {
            if (inventory.Labels.ContainsKey(value)) return value;
            throw QubesFirewallException.Invalid(ErrorIds.InvalidPropertyValue, $"There is no label '{value}' (labels: {string.Join(", ", inventory.Labels.Keys)}).", value);
        }
        return value;
    }

    private static int ComparePropertyOrder(string a, string b)
    {
        var stage = (Stage4Properties.Contains(a) ? 4 : 2).CompareTo(Stage4Properties.Contains(b) ? 4 : 2);
        return stage != 0 ? stage : string.CompareOrdinal(a, b);
    }

    // ---------------------------------------------------------------- read-modify-write

    private static bool Modify(string path, string qube, Func<XElement, QubesInventory, Qube, bool> mutate)
    {
        QubeName.Validate(qube);
        using var _ = FileLock.Acquire(FileLock.PathFor(path));
        var (doc, text) = ReadDocument(path);
        var inventory = BuildInventory(doc, path);
        var target = inventory.Find(qube) ?? throw QubesInventory.NotFound(qube, path);
        var domain = FindDomainElement(doc, target);
        if (!mutate(domain, inventory, target)) return false;
        AtomicFile.WriteAllText(path, Serialize(doc, DeclarationOf(text)));
        return true;
    }

    private static XElement FindDomainElement(XDocument doc, Qube target)
    {
        foreach (var el in doc.Root!.Elements("domains").Elements("domain"))
        {
            var props = ReadProperties(el.Element("properties"));
            var name = props.GetValueOrDefault("name");
            if (string.IsNullOrEmpty(name) && (string?)el.Attribute("class") == "AdminVM") name = "dom0";
            if (name == target.Name) return el;
        }
        // dom0 missing from qubes.xml: qubesd adds it and stores it on its next save.
        var domains = doc.Root!.Element("domains");
        if (domains is null)
        {
            domains = new XElement("domains");
            doc.Root!.Add(domains);
        }
        var dom0 = new XElement("domain", new XAttribute("id", "domain-0"), new XAttribute("class", "AdminVM"),
            new XElement("properties"), new XElement("features"), new XElement("tags"));
        domains.AddFirst(dom0);
        return dom0;
    }

    /// <summary>Removes an element with its indentation; a container left without elements becomes <c>&lt;x/&gt;</c>.</summary>
    private static void RemoveElement(XElement element)
    {
        var parent = element.Parent;
        element.Remove();
        if (parent is not null && !parent.HasElements && parent.Nodes().All(IsFormattingText))
            parent.RemoveNodes();
    }
}

using System.Globalization;
using System.Xml.Linq;

namespace QubesFirewall.Tests.Shared;

/// <summary>
/// What <c>qvm-clone</c> (or a backup restore) does to an offline root's qubes.xml: a new domain with the same
/// properties and features as the source, a new name, qid and uuid (the uuid is never cloned: core-admin
/// <c>qubes/vm/__init__.py</c>, clone=False), no ip of its own.
/// </summary>
public static class QubeCloner
{
    public static void Clone(string rootPath, string source, string clone, int qid)
    {
        var path = Path.Combine(rootPath, "qubes.xml");
        var doc = XDocument.Load(path);
        var domain = doc.Descendants("domain").Single(d => d.Descendants("property").Any(p => (string?)p.Attribute("name") == "name" && p.Value == source));
        var copy = new XElement(domain);
        copy.SetAttributeValue("id", "domain-" + qid.ToString(CultureInfo.InvariantCulture));
        foreach (var p in copy.Element("properties")!.Elements("property").ToList())
        {
            switch ((string?)p.Attribute("name"))
            {
                case "name": p.Value = clone; break;
                case "qid": p.Value = qid.ToString(CultureInfo.InvariantCulture); break;
                case "uuid": p.Value = Guid.NewGuid().ToString("D"); break;
                case "ip" or "ip6" or "mac": p.Remove(); break;
            }
        }
        domain.Parent!.Add(copy);
        doc.Save(path);
    }
}

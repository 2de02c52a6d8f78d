using System.Globalization;
using System.Text;
using System.Xml.Linq;

namespace QubesFirewall.Engine.Formats;

/// <summary>Serializing qubes.xml the way qubesd does (lxml pretty print).</summary>
public static partial class QubesXml
{
    // ---------------------------------------------------------------- serializing

    private static string? DeclarationOf(string text)
    {
        var start = text.Length > 0 && text[0] == '\uFEFF' ? 1 : 0;
        if (string.CompareOrdinal(text, start, "<?xml", 0, 5) != 0) return null;
        var end = text.IndexOf("?>", start, StringComparison.Ordinal);
        return end < 0 ? null : text[start..(end + 2)];
    }

    /// <summary>
    /// Writes a document the way qubesd's lxml writes it (<c>write(encoding="UTF-8", pretty_print=True)</c>,
    /// i.e. libxml2's formatted output): two spaces per level, each element on its own line unless
    /// its parent holds text, <c>&lt;x/&gt;</c> for elements without content and <c>&lt;x&gt;&lt;/x&gt;</c>
    /// for an empty text, a newline at the end, no declaration unless <paramref name="declaration"/> is given.
    /// Whitespace between elements is formatting and is regenerated; text inside leaf elements is kept exactly.
    /// </summary>
    internal static string Serialize(XDocument doc, string? declaration = null)
    {
        var sb = new StringBuilder();
        if (declaration is not null) sb.Append(declaration).Append('\n');
        foreach (var node in doc.Nodes())
        {
            if (node is XText) continue; // only whitespace is allowed at document level
            WriteNode(sb, node, 0, format: true);
            sb.Append('\n');
        }
        return sb.ToString();
    }

    private static void WriteNode(StringBuilder sb, XNode node, int level, bool format)
    {
        switch (node)
        {
            case XElement e: WriteElement(sb, e, level, format); break;
            case XCData c: sb.Append("<![CDATA[").Append(c.Value).Append("]]>"); break;
            case XText t: EscapeText(sb, t.Value); break;
            case XComment c: sb.Append("<!--").Append(c.Value).Append("-->"); break;
            case XProcessingInstruction pi:
                sb.Append("<?").Append(pi.Target);
                if (pi.Data.Length > 0) sb.Append(' ').Append(pi.Data);
                sb.Append("?>");
                break;
            case XDocumentType: break; // DTDs are refused when reading
        }
    }

    private static void WriteElement(StringBuilder sb, XElement e, int level, bool format)
    {
        var name = QualifiedName(e, e.Name);
        sb.Append('<').Append(name);
        foreach (var a in e.Attributes())
        {
            sb.Append(' ').Append(AttributeName(e, a)).Append("=\"");
            EscapeAttribute(sb, a.Value);
            sb.Append('"');
        }

        // Whitespace-only text between child elements is indentation, not content.
        var hasElements = e.HasElements;
        var children = e.Nodes().Where(n => !(hasElements && IsFormattingText(n))).ToList();
        if (children.Count == 0)
        {
            if (e.IsEmpty) sb.Append("/>");
            else sb.Append("></").Append(name).Append('>');
            return;
        }

        // libxml2 indents the children only when none of them is text.
        var childFormat = format && !children.Any(n => n is XText);
        sb.Append('>');
        if (childFormat) sb.Append('\n');
        foreach (var child in children)
        {
            if (childFormat && child is XElement or XComment or XProcessingInstruction) sb.Append(' ', 2 * (level + 1));
            WriteNode(sb, child, level + 1, childFormat);
            if (childFormat) sb.Append('\n');
        }
        if (childFormat) sb.Append(' ', 2 * level);
        sb.Append("</").Append(name).Append('>');
    }

    /// <summary>A text node holding only XML whitespace (not CDATA): indentation between elements.</summary>
    private static bool IsFormattingText(XNode n)
    {
        if (n is not XText t || n is XCData) return false;
        foreach (var c in t.Value)
            if (c is not (' ' or '\t' or '\n' or '\r')) return false;
        return true;
    }

    private static string QualifiedName(XElement context, XName name)
    {
        if (name.Namespace == XNamespace.None) return name.LocalName;
        var prefix = context.GetPrefixOfNamespace(name.Namespace);
        return string.IsNullOrEmpty(prefix) ? name.LocalName : prefix + ":" + name.LocalName;
    }

    private static string AttributeName(XElement context, XAttribute a)
    {
        if (a.IsNamespaceDeclaration)
            return a.Name.Namespace == XNamespace.None ? "xmlns" : "xmlns:" + a.Name.LocalName;
        if (a.Name.Namespace == XNamespace.Xml) return "xml:" + a.Name.LocalName;
        return QualifiedName(context, a.Name);
    }

    // libxml2 text escaping with an encoder set (UTF-8): & < > and CR; everything else as is.
    private static void EscapeText(StringBuilder sb, string s)
    {
        foreach (var c in s)
        {
            switch (c)
            {
                case '&': sb.Append("&amp;"); break;
                case '<': sb.Append("&lt;"); break;
                case '>': sb.Append("&gt;"); break;
                case '\r': sb.Append("&#13;"); break;
                default: sb.Append(c); break;
            }
        }
    }

    // libxml2 attribute escaping (xmlBufAttrSerializeTxtContent): & < > " and TAB/LF/CR as character
    // references; non-ASCII as hexadecimal character references (lxml-built documents have no encoding).
    private static void EscapeAttribute(StringBuilder sb, string s)
    {
        for (var i = 0; i < s.Length; i++)
        {
            var c = s[i];
            switch (c)
            {
                case '&': sb.Append("&amp;"); break;
                case '<': sb.Append("&lt;"); break;
                case '>': sb.Append("&gt;"); break;
                case '"': sb.Append("&quot;"); break;
                case '\t': sb.Append("&#9;"); break;
                case '\n': sb.Append("&#10;"); break;
                case '\r': sb.Append("&#13;"); break;
                default:
                    if (c < 0x80) sb.Append(c);
                    else
                    {
                        var cp = char.IsHighSurrogate(c) && i + 1 < s.Length && char.IsLowSurrogate(s[i + 1]) ? char.ConvertToUtf32(c, s[++i]) : c;
                        sb.Append("&#x").Append(cp.ToString("X", CultureInfo.InvariantCulture)).Append(';');
                    }
                    break;
            }
        }
    }
}

using System.Text;
using System.Xml.Linq;

namespace QubesFirewall.TestQubesd.CoreAdmin;

/// <summary>
/// Writes XML files the way qubesd does: lxml's <c>ElementTree.write(fh, encoding="UTF-8"|"utf-8",
/// pretty_print=True)</c> (core-admin <c>qubes/firewall.py</c> <c>Firewall.save</c> l.620-624,
/// <c>qubes/app.py</c> <c>Qubes.save</c> l.1570), through <c>qubes.utils.replace_file</c>
/// (<c>qubes/utils.py</c> l.245-273: a temporary file beside the target, fchmod, fsync, rename).
/// lxml writes no declaration for UTF-8, indents two spaces per level, writes an element without
/// children as <c>&lt;x/&gt;</c>, one whose text was set to "" as <c>&lt;x&gt;&lt;/x&gt;</c>, and ends with a newline.
/// </summary>
internal static class LxmlFile
{
    public static string Render(XElement root)
    {
        var sb = new StringBuilder();
        Write(sb, root, 0);
        sb.Append('\n');
        return sb.ToString();
    }

    private static void Write(StringBuilder sb, XElement e, int level)
    {
        sb.Append('<').Append(e.Name.LocalName);
        foreach (var a in e.Attributes())
            sb.Append(' ').Append(a.Name.LocalName).Append("=\"").Append(Escape(a.Value, attribute: true)).Append('"');
        if (!e.HasElements)
        {
            if (e.IsEmpty) sb.Append("/>");
            else sb.Append('>').Append(Escape(e.Value, attribute: false)).Append("</").Append(e.Name.LocalName).Append('>');
            return;
        }
        sb.Append(">\n");
        foreach (var child in e.Elements())
        {
            sb.Append(' ', 2 * (level + 1));
            Write(sb, child, level + 1);
            sb.Append('\n');
        }
        sb.Append(' ', 2 * level).Append("</").Append(e.Name.LocalName).Append('>');
    }

    private static string Escape(string s, bool attribute)
    {
        var sb = new StringBuilder(s.Length);
        foreach (var c in s)
            sb.Append(c switch
            {
                '&' => "&amp;",
                '<' => "&lt;",
                '>' => "&gt;",
                '"' when attribute => "&quot;",
                '\r' => "&#13;",
                '\n' when attribute => "&#10;",
                '\t' when attribute => "&#9;",
                _ => c.ToString(),
            });
        return sb.ToString();
    }

    /// <summary>replace_file: temporary file "&lt;target&gt;~XXXX" in the same folder, mode, fsync, rename.</summary>
    public static void Replace(string path, string content, UnixFileMode? mode)
    {
        Directory.CreateDirectory(Path.GetDirectoryName(path)!);
        var tmp = path + "~" + Guid.NewGuid().ToString("N")[..8];
        try
        {
            using (var fs = new FileStream(tmp, FileMode.CreateNew, FileAccess.Write))
            {
                fs.Write(new UTF8Encoding(false).GetBytes(content));
                if (mode is { } m && !OperatingSystem.IsWindows()) File.SetUnixFileMode(fs.SafeFileHandle, m);
                fs.Flush(flushToDisk: true);
            }
            File.Move(tmp, path, overwrite: true);
        }
        catch
        {
            File.Delete(tmp);
            throw;
        }
    }
}

/// <summary>qubes.xml as the stand-in qubesd writes it back (Qubes.save of what it loaded, nothing changed).</summary>
public static class QubesdXml
{
    /// <summary>The file's elements written the way lxml's pretty print writes them: a file qubesd wrote comes back unchanged.</summary>
    public static string Reserialize(string path) => LxmlFile.Render(XDocument.Load(path).Root!);
}

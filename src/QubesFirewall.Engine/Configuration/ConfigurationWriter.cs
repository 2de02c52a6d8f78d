using System.Globalization;
using System.Text;
using System.Text.Json;
using QubesFirewall.Engine.Model;

namespace QubesFirewall.Engine.Configuration;

/// <summary>
/// Writes a <see cref="NetworkConfiguration"/> as the .psd1 subset <see cref="Psd1Reader"/> reads (and PowerShell's
/// Import-PowerShellDataFile too), or as JSON. Stable: qubes by name, keys in a fixed order, rules in their order,
/// forwards, links and bindings sorted; the same state always gives the same bytes, so the file diffs cleanly in git.
/// </summary>
public static class ConfigurationWriter
{
    public static string Write(NetworkConfiguration configuration, ConfigurationFormat format) =>
        format == ConfigurationFormat.Json ? WriteJson(configuration) : WritePsd1(configuration);

    public static string WritePsd1(NetworkConfiguration configuration)
    {
        var sb = new StringBuilder();
        sb.Append("# Qubes network configuration: Export-QubeNetworkConfiguration wrote it; Test-QubeNetworkConfiguration\n");
        sb.Append("# compares it with a system, Invoke-QubeNetworkConfiguration makes a system match it. Read as data only.\n");
        sb.Append("@{\n");
        sb.Append("    Version = ").Append(NetworkConfiguration.FormatVersion.ToString(CultureInfo.InvariantCulture)).Append('\n');
        sb.Append("    Qubes = @{\n");
        foreach (var qube in configuration.Qubes.OrderBy(q => q.Name, StringComparer.Ordinal))
        {
            sb.Append("        ").Append(Quote(qube.Name)).Append(" = @{\n");
            foreach (var (key, value) in Fields(qube))
            {
                sb.Append("            ").Append(key).Append(" = ");
                switch (value)
                {
                    case string s:
                        sb.Append(Quote(s)).Append('\n');
                        break;
                    case IReadOnlyList<string> lines:
                        sb.Append("@(\n");
                        foreach (var line in lines) sb.Append("                ").Append(Quote(line)).Append('\n');
                        sb.Append("            )\n");
                        break;
                    case IReadOnlyList<IReadOnlyList<(string Key, object Value)>> maps:
                        if (maps.Count == 0) { sb.Append("@()\n"); break; }
                        sb.Append("@(\n");
                        foreach (var map in maps)
                            sb.Append("                @{ ").Append(string.Join("; ", map.Select(f => f.Key + " = " + Psd1Scalar(f.Value)))).Append(" }\n");
                        sb.Append("            )\n");
                        break;
                }
            }
            sb.Append("        }\n");
        }
        sb.Append("    }\n");
        sb.Append("}\n");
        return sb.ToString();
    }

    public static string WriteJson(NetworkConfiguration configuration)
    {
        using var stream = new MemoryStream();
        using (var json = new Utf8JsonWriter(stream, new JsonWriterOptions { Indented = true, Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping }))
        {
            json.WriteStartObject();
            json.WriteNumber("Version", NetworkConfiguration.FormatVersion);
            json.WriteStartObject("Qubes");
            foreach (var qube in configuration.Qubes.OrderBy(q => q.Name, StringComparer.Ordinal))
            {
                json.WriteStartObject(qube.Name);
                foreach (var (key, value) in Fields(qube))
                {
                    switch (value)
                    {
                        case string s:
                            json.WriteString(key, s);
                            break;
                        case IReadOnlyList<string> lines:
                            json.WriteStartArray(key);
                            foreach (var line in lines) json.WriteStringValue(line);
                            json.WriteEndArray();
                            break;
                        case IReadOnlyList<IReadOnlyList<(string Key, object Value)>> maps:
                            json.WriteStartArray(key);
                            foreach (var map in maps)
                            {
                                json.WriteStartObject();
                                foreach (var (k, v) in map) JsonScalar(json, k, v);
                                json.WriteEndObject();
                            }
                            json.WriteEndArray();
                            break;
                    }
                }
                json.WriteEndObject();
            }
            json.WriteEndObject();
            json.WriteEndObject();
        }
        return Encoding.UTF8.GetString(stream.ToArray()).Replace("\r\n", "\n", StringComparison.Ordinal) + "\n";
    }

    // The managed members of a qube, in the file's order; values are a string, a list of strings or a list of maps.
    private static IEnumerable<(string Key, object Value)> Fields(QubeConfiguration qube)
    {
        if (qube.NetVM is { } netvm) yield return ("NetVM", netvm.Text);
        if (qube.IPv6 is { } ipv6) yield return ("IPv6", ipv6.ToString());
        if (qube.Rules is { } rules) yield return ("Rules", (IReadOnlyList<string>)rules.Select(r => r.Text).ToList());
        if (qube.Forwards is { } forwards) yield return ("Forwards", (IReadOnlyList<IReadOnlyList<(string, object)>>)forwards.Select(ForwardFields).ToList());
        if (qube.Links is { } links)
            yield return ("Links", (IReadOnlyList<IReadOnlyList<(string, object)>>)links.Select(l => (IReadOnlyList<(string, object)>)
                [("To", l.To), ("Protocol", l.ProtocolText), ("Port", l.Ports.IsSinglePort ? l.Ports.First : (object)l.Ports.ToString())]).ToList());
        if (qube.Bindings is { } bindings)
            yield return ("Bindings", (IReadOnlyList<IReadOnlyList<(string, object)>>)bindings.Select(b => (IReadOnlyList<(string, object)>)
                [("To", b.To), ("Port", b.Port), ("LocalPort", b.LocalPort), ("Permanent", b.Permanent)]).ToList());
    }

    private static IReadOnlyList<(string, object)> ForwardFields(PortForward f)
    {
        var fields = new List<(string, object)>
        {
            ("Protocol", f.ProtocolText),
            ("Port", f.Port),
            ("TargetPort", f.TargetPort),
            ("Type", f.Type.ToString()),
            ("AllowFrom", f.AllowFrom.Count == 0 ? ConfigurationReader.AnySource : (object)f.AllowFrom.Select(h => h.Value).ToList()),
        };
        if (f.Interface is { } iface) fields.Add(("Interface", iface));
        if (f.Expire is { } expire) fields.Add(("Expire", expire));
        if (f.Comment is { } comment) fields.Add(("Comment", comment));
        return fields;
    }

    private static string Psd1Scalar(object value) => value switch
    {
        string s => Quote(s),
        int i => i.ToString(CultureInfo.InvariantCulture),
        long l => l.ToString(CultureInfo.InvariantCulture),
        bool b => b ? "$true" : "$false",
        IEnumerable<string> list => "@(" + string.Join(", ", list.Select(Quote)) + ")",
        _ => throw new InvalidOperationException(value.GetType().Name),
    };

    private static void JsonScalar(Utf8JsonWriter json, string key, object value)
    {
        switch (value)
        {
            case string s: json.WriteString(key, s); break;
            case int i: json.WriteNumber(key, i); break;
            case long l: json.WriteNumber(key, l); break;
            case bool b: json.WriteBoolean(key, b); break;
            case IEnumerable<string> list:
                json.WriteStartArray(key);
                foreach (var item in list) json.WriteStringValue(item);
                json.WriteEndArray();
                break;
            default: throw new InvalidOperationException(value.GetType().Name);
        }
    }

    /// <summary>A single-quoted PowerShell string ('' for a quote).</summary>
    public static string Quote(string value) => "'" + value.Replace("'", "''", StringComparison.Ordinal) + "'";
}

using System.Globalization;
using System.Net;
using System.Net.Sockets;
using System.Text.RegularExpressions;
using QubesFirewall.Engine.Model;

namespace QubesFirewall.Engine.Agent;

/// <summary>One rule part of a qube's agent keys: the key's name after <c>vm-config.</c>, and its fields after <c>for=</c> and <c>gen=</c>.</summary>
public sealed record AgentPart(string Name, IReadOnlyList<string> Fields)
{
    /// <summary>The forward a <c>hop</c>/<c>tgt</c> part belongs to (<c>&lt;port5&gt;.&lt;proto&gt;.&lt;h10&gt;</c>), null for a link's part.</summary>
    public string? ForwardId => AgentFeatures.ForwardIdOf(Name);

    /// <summary>The value of one field (<c>vm</c>, <c>exp</c>, ...), null when the part has none.</summary>
    public string? Field(string name) => Fields.FirstOrDefault(f => f.StartsWith(name + "=", StringComparison.Ordinal))?[(name.Length + 1)..];
}

public static partial class AgentFeatures
{
    [GeneratedRegex(@"\Aqubesfw\.(hop|tgt)([46])\.([0-9]{5})\.(tcp|udp)\.([0-9a-f]{10})(\.[1-9][0-9]{0,3})?\z", RegexOptions.CultureInvariant)]
    private static partial Regex ForwardKeyName();

    [GeneratedRegex(@"\Aqubesfw\.(lnet|ldst)([46])\.([0-9a-f]{12})\z", RegexOptions.CultureInvariant)]
    private static partial Regex LinkKeyNamePattern();

    [GeneratedRegex(@"\Afor=([A-Za-z][A-Za-z0-9_.-]{0,30}) ", RegexOptions.CultureInvariant)]
    private static partial Regex ForField();

    private static readonly HashSet<string> FieldNames = new(StringComparer.Ordinal) { "for", "gen", "keys", "proto", "port", "to", "in", "nat", "dst", "src", "exp", "vm", "ports", "from" };

    [GeneratedRegex(@"\Afor=[A-Za-z][A-Za-z0-9_.-]{0,30} gen=([0-9a-f]{16}) keys=[0-9]{1,5}\z", RegexOptions.CultureInvariant)]
    private static partial Regex GenValue();

    /// <summary>
    /// The generation dom0 gave a qube's agent: the hash in its <c>vm-config.qubesfw.gen</c> feature, <c>none</c> when it carries
    /// none (an empty set: the agent reports <c>applied=none</c>), null when that feature is not in the grammar (<see cref="AgentAuditCheck.AgentKeysStale"/>'s finding).
    /// </summary>
    public static string? GenerationOf(Qube qube) =>
        qube.Features.GetValueOrDefault(GenFeature) is not { } value ? "none"
        : GenValue().Match(value) is { Success: true } m ? m.Groups[1].Value : null;

    /// <summary>The forward id (<c>&lt;port5&gt;.&lt;proto&gt;.&lt;h10&gt;</c>) in the name of a forward's part, null for any other name.</summary>
    internal static string? ForwardIdOf(string name) =>
        ForwardKeyName().Match(name) is { Success: true } m ? $"{m.Groups[3].Value}.{m.Groups[4].Value}.{m.Groups[5].Value}" : null;

    /// <summary>Whether the data key <paramref name="feature"/> is a part of the forward <paramref name="protocol"/>/<paramref name="port"/> declared on <paramref name="vmName"/> (any family, any split).</summary>
    public static bool IsPartOfForward(string feature, string vmName, ForwardProtocol protocol, int port) =>
        feature.StartsWith(VmConfigPrefix, StringComparison.Ordinal) && ForwardIdOf(feature[VmConfigPrefix.Length..]) == ForwardId(vmName, protocol, port);

    /// <summary>Whether the data key <paramref name="feature"/> is a part of one of the forwards <paramref name="ids"/> (<see cref="ForwardId"/>).</summary>
    public static bool IsPartOfForwards(string feature, IReadOnlySet<string> ids) =>
        feature.StartsWith(VmConfigPrefix, StringComparison.Ordinal) && ForwardIdOf(feature[VmConfigPrefix.Length..]) is { } id && ids.Contains(id);

    /// <summary>What the key names of the forward <paramref name="protocol"/>/<paramref name="port"/> declared on <paramref name="vmName"/> carry: <c>08443.tcp.00e13ed7af</c>.</summary>
    public static string ForwardId(string vmName, ForwardProtocol protocol, int port) =>
        $"{port.ToString("D5", CultureInfo.InvariantCulture)}.{(protocol == ForwardProtocol.Tcp ? "tcp" : "udp")}.{Hash(vmName, 10)}";

    /// <summary>The names of a qube's hop parts of <paramref name="protocol"/>/<paramref name="port"/>, whatever qube they forward to (feature names only: no value is read).</summary>
    public static IEnumerable<string> PartsOfPort(Qube qube, ForwardProtocol protocol, int port)
    {
        var id = $"{port.ToString("D5", CultureInfo.InvariantCulture)}.{(protocol == ForwardProtocol.Tcp ? "tcp" : "udp")}.";
        return qube.Features.Keys.Where(f => f.StartsWith(VmConfigPrefix + "qubesfw.hop", StringComparison.Ordinal)
            && ForwardIdOf(f[VmConfigPrefix.Length..]) is { } fid && fid.StartsWith(id, StringComparison.Ordinal)).Order(StringComparer.Ordinal).ToList();
    }

    /// <summary>Whether the data key <paramref name="feature"/> is a part of <paramref name="link"/> (either family, either end).</summary>
    public static bool IsPartOfLink(string feature, InterVmLink link) =>
        feature.StartsWith(VmConfigPrefix, StringComparison.Ordinal) && LinkKeyNamePattern().Match(feature[VmConfigPrefix.Length..]) is { Success: true } m
        && m.Groups[3].Value == Hash(link.Text, 12);

    /// <summary>
    /// Reads one data key a qube carries, as a part to keep when its set is sealed again: the name and the value in the agent's
    /// grammar (the checks its <c>render_key</c> makes, plus that the name is the one the module derives for the value: port,
    /// protocol and the hash of the qube or link it names), <c>for=</c> naming <paramref name="vmName"/>, a 16-hex <c>gen=</c>.
    /// Anything else is refused (<c>InvalidAgentKey</c>): a set is never sealed again over a key the agent would refuse. A key whose
    /// <c>for=</c> names another qube is a copy (<c>qvm-clone</c> copies features), never this qube's: null, so it goes with the change.
    /// </summary>
    public static AgentPart? ReadPart(string vmName, string feature, string value)
    {
        Validate(feature, value);
        var name = feature[VmConfigPrefix.Length..];
        if (ForField().Match(value) is { Success: true } owner && owner.Groups[1].Value != vmName) return null;
        if (PartProblem(vmName, name, value, out var fields) is { } why)
            throw new QubesFirewallException(ErrorIds.InvalidAgentKey, FailureKind.InvalidData,
                $"The agent key {feature} of '{vmName}' is not in the agent's grammar ({why}): '{RuleGrammar.Printable(value)}'. This change keeps the keys other " +
                $"forwards and links gave '{vmName}' and cannot keep this one. Nothing was changed. Remove it (qvm-features --unset {vmName} {feature}) and run " +
                $"Test-QubeFirewall {vmName}, which says what the declarations derive there.", feature);
        return new AgentPart(name, fields);
    }

    private static string? PartProblem(string vmName, string name, string value, out List<string> fields)
    {
        fields = [];
        var forward = ForwardKeyName().Match(name);
        var link = forward.Success ? Match.Empty : LinkKeyNamePattern().Match(name);
        if (!forward.Success && !link.Success) return "not a key name the module derives";
        var kind = forward.Success ? forward.Groups[1].Value : link.Groups[1].Value;
        var v4 = (forward.Success ? forward.Groups[2].Value : link.Groups[2].Value) == "4";
        if (value.Length == 0 || value[0] == ' ' || value[^1] == ' ' || value.Contains("  ", StringComparison.Ordinal)) return "stray spaces";
        var v = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (var word in value.Split(' '))
        {
            var eq = word.IndexOf('=', StringComparison.Ordinal);
            if (eq <= 0 || eq == word.Length - 1) return $"'{word}' is not key=value";
            var key = word[..eq];
            if (!FieldNames.Contains(key)) return $"unknown field {key}";
            if (!v.TryAdd(key, word[(eq + 1)..])) return $"field {key} given twice";
            if (key is not ("for" or "gen")) fields.Add(word);
        }
        string? F(string k) => v.GetValueOrDefault(k);
        if (F("for") != vmName) return F("for") is null ? "no for=" : "it names another qube";
        if (F("gen") is not { Length: 16 } gen || !gen.All(char.IsAsciiHexDigitLower)) return "gen= is not a generation";
        if (F("keys") is not null) return "keys= belongs to qubesfw.gen";
        if (!IsName(F("vm"))) return "vm= is not a qube name";
        if (F("proto") is not ("tcp" or "udp")) return "proto= must be tcp or udp";
        if (kind is "hop" or "tgt")
        {
            if (!IsPort(F("port"))) return "port= is not a port";
            if (!IsPort(F("to"))) return "to= is not a port";
            if (!IsSources(v4, F("src"))) return "src= must be any or addresses of the family";
            if (F("exp") is { } exp && !IsUint(exp, 12)) return "exp= is not a Unix time";
            if (F("ports") is not null || F("from") is not null) return "ports= and from= belong to links";
            if (F("port")!.PadLeft(5, '0') != forward.Groups[3].Value || F("proto") != forward.Groups[4].Value || Hash(F("vm")!, 10) != forward.Groups[5].Value)
                return "its name is not the one its port, protocol and vm= give";
            if (kind == "hop")
            {
                if (!IsIngress(F("in"))) return "in= is not out, up, cl or if:<interface>";
                if (!IsAddress(v4, F("nat"))) return "nat= is not an address of the family";
                if (F("dst") != "local" && !IsAddress(v4, F("dst"))) return "dst= is not local or an address";
            }
            else
            {
                if (F("in") is not null || F("nat") is not null) return "in= and nat= belong to hops";
                if (!IsAddress(v4, F("dst"))) return "dst= is not an address of the family";
            }
            return null;
        }
        if (!IsPorts(F("ports"))) return "ports= must be all, a port or a range";
        if (!IsAddress(v4, F("src"))) return "src= is not an address of the family";
        if (!IsAddress(v4, F("dst"))) return "dst= is not an address of the family";
        if (!IsName(F("from"))) return "from= is not a qube name";
        if (new[] { "port", "to", "in", "nat", "exp" }.Any(k => F(k) is not null)) return "port=, to=, in=, nat= and exp= belong to forwards";
        if (Hash($"{F("from")} -> {F("vm")} {F("proto")}/{F("ports")}", 12) != link.Groups[3].Value) return "its name is not the one its link gives";
        return null;
    }

    private static bool IsUint(string? s, int digits) =>
        s is { Length: > 0 } && s.Length <= digits && s.All(char.IsAsciiDigit) && (s.Length == 1 || s[0] != '0');

    private static bool IsPort(string? s) => IsUint(s, 5) && int.Parse(s!, CultureInfo.InvariantCulture) is >= 1 and <= 65535;

    private static bool IsName(string? s) =>
        s is { Length: > 0 and <= 31 } && char.IsAsciiLetter(s[0]) && s.All(c => char.IsAsciiLetterOrDigit(c) || c is '_' or '.' or '-');

    private static bool IsAddress(bool v4, string? s)
    {
        if (s is null) return false;
        if (v4)
        {
            var octets = s.Split('.');
            return octets.Length == 4 && octets.All(o => IsUint(o, 3) && int.Parse(o, CultureInfo.InvariantCulture) <= 255);
        }
        return s.Length <= 39 && s.All(c => char.IsAsciiDigit(c) || c is >= 'a' and <= 'f' or ':') && s.Count(c => c == ':') >= 2
            && !s.Contains(":::", StringComparison.Ordinal) && s.IndexOf("::", StringComparison.Ordinal) == s.LastIndexOf("::", StringComparison.Ordinal)
            && IPAddress.TryParse(s, out var a) && a.AddressFamily == AddressFamily.InterNetworkV6;
    }

    private static bool IsCidr(bool v4, string s)
    {
        var slash = s.IndexOf('/', StringComparison.Ordinal);
        if (slash < 0) return IsAddress(v4, s);
        var length = s[(slash + 1)..];
        return IsAddress(v4, s[..slash]) && IsUint(length, 3) && int.Parse(length, CultureInfo.InvariantCulture) <= (v4 ? 32 : 128);
    }

    private static bool IsSources(bool v4, string? s) => s == "any" || (s is { Length: > 0 } && s.Split(',').All(x => x.Length > 0 && IsCidr(v4, x)));

    private static bool IsIngress(string? s)
    {
        if (s is "out" or "up" or "cl") return true;
        if (s is null || !s.StartsWith("if:", StringComparison.Ordinal)) return false;
        var i = s[3..];
        return i.Length is > 0 and <= 15 && i is not ("." or ".." or "lo") && !i.StartsWith("vif", StringComparison.Ordinal)
            && i.All(c => char.IsAsciiLetterOrDigit(c) || c is '_' or '.' or '-');
    }

    private static bool IsPorts(string? s)
    {
        if (s == "all") return true;
        if (s is null) return false;
        var dash = s.IndexOf('-', StringComparison.Ordinal);
        if (dash < 0) return IsPort(s);
        var (a, b) = (s[..dash], s[(dash + 1)..]);
        return IsPort(a) && IsPort(b) && int.Parse(a, CultureInfo.InvariantCulture) < int.Parse(b, CultureInfo.InvariantCulture);
    }
}

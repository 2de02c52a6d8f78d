using System.Globalization;
using System.Text;
using QubesFirewall.Engine.Validation;

namespace QubesFirewall.Engine.Model;

/// <summary>The transport protocol of a port forward.</summary>
public enum ForwardProtocol { Tcp, Udp }

/// <summary>Where a forwarded port is reachable from.</summary>
public enum ForwardType
{
    /// <summary>
    /// From outside Qubes: the port opens on the network qube that holds the physical NIC (sys-net),
    /// and each network qube on the way (sys-firewall, ...) passes it on to the next one.
    /// </summary>
    External,

    /// <summary>
    /// From the other qubes served by the target's own network qube (or, with an interface, from what
    /// arrives on that interface of it, a VPN tunnel for instance): the port opens on that network
    /// qube's address. One hop only.
    /// </summary>
    Internal,
}

/// <summary>
/// One declared port forward: a port opened on the network side and passed, hop by hop, to a port of
/// the target qube. Declarations live in qube features of the target, one per protocol and port:
/// <c>qubesfirewall.forward.tcp.443</c> = <c>target=8443 type=external allow=192.168.1.0/24 comment=web</c>
/// (see <see cref="PortForwardFeature"/> for the grammar). Values are validated on construction
/// (<see cref="Create"/>) and on parsing, so anything in a record is safe to put into nft and shell text.
/// </summary>
public sealed record PortForward
{
    public const int MaxAllowFrom = 64;
    public const int MaxCommentLength = 200;

    /// <summary>The qube the traffic ends in.</summary>
    public required string VMName { get; init; }

    public required ForwardProtocol Protocol { get; init; }

    /// <summary>The port opened on the network side (1-65535).</summary>
    public required int Port { get; init; }

    /// <summary>The port in the target qube (equal to <see cref="Port"/> unless translated).</summary>
    public required int TargetPort { get; init; }

    public required ForwardType Type { get; init; }

    /// <summary>Allowed source networks in CIDR form (<c>192.168.1.0/24</c>, <c>10.0.0.5/32</c>); empty = any source.</summary>
    public IReadOnlyList<HostSpec> AllowFrom { get; init; } = [];

    /// <summary>The interface the traffic must arrive on in the first hop; null = the default for the type.</summary>
    public string? Interface { get; init; }

    /// <summary>Unix time at which every rule of the forward stops matching; null = never.</summary>
    public long? Expire { get; init; }

    public string? Comment { get; init; }

    /// <summary>The feature that stores this forward on <see cref="VMName"/>.</summary>
    public string FeatureName => PortForwardFeature.NameFor(Protocol, Port);

    /// <summary>The feature value that stores this forward.</summary>
    public string FeatureValue => PortForwardFeature.FormatValue(this);

    public string ProtocolText => Protocol == ForwardProtocol.Tcp ? "tcp" : "udp";

    /// <summary>True when anyone who can reach the first hop may use the forward.</summary>
    public bool IsOpenToEveryone => AllowFrom.Count == 0 || AllowFrom.Any(h => h.PrefixLength == 0);

    public bool IsExpiredAt(DateTimeOffset now) => Expire is { } e && e < now.ToUnixTimeSeconds();

    public DateTimeOffset? ExpireTime => Expire is { } e ? DateTimeOffset.FromUnixTimeSeconds(e) : null;

    /// <summary>Short form for messages: <c>tcp/443 -> work:8443</c>.</summary>
    public string Text => $"{ProtocolText}/{Port.ToString(CultureInfo.InvariantCulture)} -> {VMName}:{TargetPort.ToString(CultureInfo.InvariantCulture)}";

    public override string ToString() => Text;

    /// <summary>
    /// Builds a forward from user input, validating everything: the qube name, ports (1-65535; text
    /// such as <c>080</c> is read as 80 by the callers), source networks (IPv4/IPv6 CIDR without host bits;
    /// a bare address means that one host), the interface name, the expiry and the comment.
    /// </summary>
    public static PortForward Create(string vmName, ForwardProtocol protocol, int port, int? targetPort = null,
        ForwardType type = ForwardType.External, IEnumerable<string>? allowFrom = null, string? @interface = null,
        long? expire = null, string? comment = null)
    {
        var forward = new PortForward
        {
            VMName = QubeName.Validate(vmName),
            Protocol = protocol,
            Port = ValidatePort(port, "Port"),
            TargetPort = ValidatePort(targetPort ?? port, "TargetPort"),
            Type = type,
            AllowFrom = ParseAllowFrom(allowFrom ?? []),
            Interface = string.IsNullOrEmpty(@interface) ? null : ValidateInterface(@interface),
            Expire = expire is { } e ? ValidateExpire(e) : null,
            Comment = string.IsNullOrEmpty(comment) ? null : ValidateComment(comment),
        };
        return forward;
    }

    public static int ValidatePort(int port, string what = "Port")
    {
        if (port is < 1 or > PortRange.MaxPort)
            throw QubesFirewallException.Invalid(ErrorIds.InvalidForwardPort,
                $"{what} {port.ToString(CultureInfo.InvariantCulture)} is not a port that can be forwarded: use 1-65535.", port);
        return port;
    }

    /// <summary>Reads a port given as text: decimal digits only, leading zeros ignored (<c>080</c> is 80).</summary>
    public static int ParsePort(string? text, string what = "Port")
    {
        if (!PortRange.TryParse(text, strict: true, out var range, out _) || !range.IsSinglePort || text!.Contains('-'))
            throw QubesFirewallException.Invalid(ErrorIds.InvalidForwardPort,
                $"{what} '{RuleGrammar.Printable(text)}' is not a port: use one decimal number 1-65535.", text);
        return ValidatePort(range.First, what);
    }

    /// <summary>Source networks: validated, canonical (bare addresses get /32 or /128), duplicates dropped.</summary>
    public static IReadOnlyList<HostSpec> ParseAllowFrom(IEnumerable<string> values)
    {
        var list = new List<HostSpec>();
        foreach (var raw in values)
        {
            if (raw is null) continue;
            foreach (var part in raw.Split(',', StringSplitOptions.TrimEntries))
            {
                var host = ParseNetwork(part);
                if (!list.Contains(host)) list.Add(host);
            }
        }
        if (list.Count > MaxAllowFrom)
            throw QubesFirewallException.Invalid(ErrorIds.TooManySources,
                $"A port forward takes at most {MaxAllowFrom} source networks ({list.Count} given); use wider networks.", list.Count);
        return list;
    }

    /// <summary>One source network in CIDR form. Host names are refused (a forward cannot resolve them) and so are host bits set under the prefix.</summary>
    public static HostSpec ParseNetwork(string? value)
    {
        if (string.IsNullOrWhiteSpace(value))
            throw QubesFirewallException.Invalid(ErrorIds.InvalidAllowFrom, "An allowed source is empty: give an IPv4 or IPv6 address or network such as 192.168.1.0/24.", value);
        if (!HostSpec.TryParse(value, out var host, out var error))
            throw QubesFirewallException.Invalid(ErrorIds.InvalidAllowFrom, $"Invalid allowed source '{RuleGrammar.Printable(value)}': {error}.", value);
        if (host!.Kind == HostKind.Name)
            throw QubesFirewallException.Invalid(ErrorIds.InvalidAllowFrom,
                $"Invalid allowed source '{RuleGrammar.Printable(value)}': give an IP address or network; host names cannot be resolved by the rules of a port forward.", value);
        var network = NetworkAddress(host);
        if (network != host.Value)
            throw QubesFirewallException.Invalid(ErrorIds.InvalidAllowFrom,
                $"Invalid allowed source '{RuleGrammar.Printable(value)}': it has bits set after the /{host.PrefixLength.ToString(CultureInfo.InvariantCulture)} prefix. Did you mean {network}?", value);
        return host;
    }

    /// <summary>The network a CIDR names, host bits cleared, in the same text form.</summary>
    internal static string NetworkAddress(HostSpec host)
    {
        var slash = host.Value.IndexOf('/');
        var ip = System.Net.IPAddress.Parse(host.Value[..slash]);
        var bytes = ip.GetAddressBytes();
        for (var bit = host.PrefixLength; bit < bytes.Length * 8; bit++)
            bytes[bit / 8] &= (byte)~(0x80 >> (bit % 8));
        var network = new System.Net.IPAddress(bytes);
        var text = host.Kind == HostKind.IPv4 ? network.ToString() : network.ToString().ToLowerInvariant();
        // keep the user's IPv6 spelling when it names the same network
        if (host.Kind == HostKind.IPv6 && System.Net.IPAddress.Parse(host.Value[..slash]).Equals(network)) text = host.Value[..slash];
        return text + "/" + host.PrefixLength.ToString(CultureInfo.InvariantCulture);
    }

    /// <summary>Whether <paramref name="address"/> (an IPv4 or IPv6 literal) is inside <paramref name="network"/>.</summary>
    public static bool Contains(HostSpec network, string address)
    {
        if (network.Kind == HostKind.Name || !System.Net.IPAddress.TryParse(address, out var ip)) return false;
        var slash = network.Value.IndexOf('/');
        var net = System.Net.IPAddress.Parse(network.Value[..slash]);
        if (net.AddressFamily != ip.AddressFamily) return false;
        var a = net.GetAddressBytes();
        var b = ip.GetAddressBytes();
        for (var bit = 0; bit < network.PrefixLength; bit++)
        {
            var mask = 0x80 >> (bit % 8);
            if ((a[bit / 8] & mask) != (b[bit / 8] & mask)) return false;
        }
        return true;
    }

    /// <summary>
    /// Interface names as Linux accepts them and nft matches them literally: 1-15 of ASCII letters,
    /// digits, '_', '.', '-'. Not <c>lo</c>, and not <c>vif*</c> (those lead to client qubes).
    /// </summary>
    public static string ValidateInterface(string? name)
    {
        if (string.IsNullOrEmpty(name) || name.Length > 15 || !name.All(c => char.IsAsciiLetterOrDigit(c) || c is '_' or '.' or '-') || name is "." or "..")
            throw QubesFirewallException.Invalid(ErrorIds.InvalidInterface,
                $"'{RuleGrammar.Printable(name)}' is not an interface name: use 1 to 15 ASCII letters, digits, '_', '.' and '-' (for example ens6 or wlp0s0f0).", name);
        if (name == "lo")
            throw QubesFirewallException.Invalid(ErrorIds.InvalidInterface, "'lo' is the loopback interface: traffic from other hosts never arrives on it.", name);
        if (name.StartsWith("vif", StringComparison.Ordinal))
            throw QubesFirewallException.Invalid(ErrorIds.InvalidInterface,
                $"'{name}' is a vif interface, the link to a client qube; its number changes each time that qube starts. Forward from a qube with -Type Internal instead.", name);
        return name;
    }

    public static long ValidateExpire(long expire)
    {
        if (expire is <= 0 or > 253402300799)
            throw QubesFirewallException.Invalid(ErrorIds.InvalidExpire, $"The expiry time {expire.ToString(CultureInfo.InvariantCulture)} is not a Unix time (seconds since 1970) before year 10000.", expire);
        return expire;
    }

    /// <summary>The characters of a firewall comment (ASCII letters, digits, space and <c>:;,./-_[]</c>), not blank, at most 200.</summary>
    public static string ValidateComment(string comment)
    {
        RuleGrammar.ValidateComment(comment);
        if (comment.Length > MaxCommentLength)
            throw QubesFirewallException.Invalid(ErrorIds.InvalidComment, $"The comment is {comment.Length} characters long; a port forward's comment has at most {MaxCommentLength}.", comment);
        if (comment.Trim().Length == 0 || comment != comment.Trim())
            throw QubesFirewallException.Invalid(ErrorIds.InvalidComment, "A comment must not be blank nor start or end with a space.", comment);
        return comment;
    }
}

/// <summary>
/// The qube feature that declares a port forward.
/// <para>Name: <c>qubesfirewall.forward.&lt;tcp|udp&gt;.&lt;port&gt;</c>, the port in decimal without leading zeros.</para>
/// <para>Value: ASCII words <c>key=value</c> separated by one space, written in this order:</para>
/// <list type="bullet">
/// <item><c>target=&lt;port&gt;</c> (required): the port in the target qube, 1-65535.</item>
/// <item><c>type=external|internal</c> (required).</item>
/// <item><c>allow=&lt;cidr&gt;[,&lt;cidr&gt;...]</c>: allowed source networks; IPv4 or IPv6, host bits clear, a bare address is one host. Absent: any source.</item>
/// <item><c>iface=&lt;name&gt;</c>: the interface the traffic arrives on in the first hop (1-15 of <c>[A-Za-z0-9_.-]</c>, not lo, not vif*).</item>
/// <item><c>expire=&lt;unix seconds&gt;</c>: when the forward stops matching.</item>
/// <item><c>comment=&lt;text&gt;</c>: last, the rest of the value; ASCII letters, digits, space and <c>:;,./-_[]</c>.</item>
/// </list>
/// <para>Parsing is strict: every key at most once, no unknown key, no empty value, no double or
/// trailing space; keys before <c>comment</c> may come in any order. Writing always produces the canonical form.</para>
/// </summary>
public static class PortForwardFeature
{
    public const string Prefix = "qubesfirewall.forward.";

    public static string NameFor(ForwardProtocol protocol, int port) =>
        Prefix + (protocol == ForwardProtocol.Tcp ? "tcp" : "udp") + "." + port.ToString(CultureInfo.InvariantCulture);

    public static bool IsForwardFeature(string name) => name.StartsWith(Prefix, StringComparison.Ordinal);

    /// <summary>
    /// Reads a feature name. Strict (the default) accepts only the canonical form; lenient also reads
    /// upper-case protocols and leading zeros (so Remove can find a feature written by hand).
    /// </summary>
    public static bool TryParseName(string name, out ForwardProtocol protocol, out int port, bool lenient = false)
    {
        protocol = default;
        port = 0;
        if (!IsForwardFeature(name)) return false;
        var rest = name[Prefix.Length..].Split('.');
        if (rest.Length != 2) return false;
        var proto = lenient ? rest[0].ToLowerInvariant() : rest[0];
        if (proto == "tcp") protocol = ForwardProtocol.Tcp;
        else if (proto == "udp") protocol = ForwardProtocol.Udp;
        else return false;
        var digits = rest[1];
        if (digits.Length is 0 or > 7 || !digits.All(char.IsAsciiDigit)) return false;
        if (!lenient && digits.Length > 1 && digits[0] == '0') return false;
        var value = int.Parse(digits, CultureInfo.InvariantCulture);
        if (value is < 1 or > PortRange.MaxPort) return false;
        port = value;
        return true;
    }

    public static string FormatValue(PortForward forward)
    {
        var sb = new StringBuilder(64);
        sb.Append("target=").Append(forward.TargetPort.ToString(CultureInfo.InvariantCulture));
        sb.Append(" type=").Append(forward.Type == ForwardType.External ? "external" : "internal");
        if (forward.AllowFrom.Count > 0) sb.Append(" allow=").Append(string.Join(",", forward.AllowFrom.Select(h => h.Value)));
        if (forward.Interface is { } iface) sb.Append(" iface=").Append(iface);
        if (forward.Expire is { } expire) sb.Append(" expire=").Append(expire.ToString(CultureInfo.InvariantCulture));
        if (forward.Comment is { } comment) sb.Append(" comment=").Append(comment);
        var text = sb.ToString();
        QubeFeature.ValidateValue(forward.FeatureName, text);
        return text;
    }

    /// <summary>Reads a declaration; throws InvalidPortForwardFeature with the reason.</summary>
    public static PortForward Parse(string vmName, string featureName, string value)
    {
        if (!TryParseName(featureName, out var protocol, out var port))
            throw Bad(featureName, $"the name must be {Prefix}tcp.<port> or {Prefix}udp.<port>, with a port 1-65535 written without leading zeros");
        if (value is null) throw Bad(featureName, "it has no value");
        string? comment = null;
        var head = value;
        var at = value.StartsWith("comment=", StringComparison.Ordinal) ? 0 : value.IndexOf(" comment=", StringComparison.Ordinal) is var i and >= 0 ? i + 1 : -1;
        if (at >= 0)
        {
            comment = value[(at + "comment=".Length)..];
            head = at == 0 ? "" : value[..(at - 1)];
            if (comment.Length == 0) throw Bad(featureName, "comment= is empty (leave the key out instead)");
        }
        var seen = new Dictionary<string, string>(StringComparer.Ordinal);
        if (head.Length > 0)
        {
            foreach (var word in head.Split(' '))
            {
                if (word.Length == 0) throw Bad(featureName, "words are separated by exactly one space, with none at either end");
                var eq = word.IndexOf('=');
                if (eq <= 0) throw Bad(featureName, $"'{RuleGrammar.Printable(word)}' is not a key=value word");
                var key = word[..eq];
                var val = word[(eq + 1)..];
                if (key is not ("target" or "type" or "allow" or "iface" or "expire"))
                    throw Bad(featureName, $"unknown key '{RuleGrammar.Printable(key)}' (known: target, type, allow, iface, expire, comment)");
                if (val.Length == 0) throw Bad(featureName, $"{key}= has no value");
                if (!seen.TryAdd(key, val)) throw Bad(featureName, $"{key}= is given twice");
            }
        }
        if (!seen.TryGetValue("target", out var targetText)) throw Bad(featureName, "target= is missing");
        if (!seen.TryGetValue("type", out var typeText)) throw Bad(featureName, "type= is missing");
        try
        {
            if (targetText.Length > 1 && targetText[0] == '0') throw Bad(featureName, "target= is written without leading zeros");
            var targetPort = PortForward.ParsePort(targetText, "target");
            var type = typeText switch
            {
                "external" => ForwardType.External,
                "internal" => ForwardType.Internal,
                _ => throw Bad(featureName, $"type= is '{RuleGrammar.Printable(typeText)}'; use external or internal"),
            };
            long? expire = null;
            if (seen.TryGetValue("expire", out var expireText))
            {
                if (expireText.Length > 12 || !expireText.All(char.IsAsciiDigit) || (expireText.Length > 1 && expireText[0] == '0'))
                    throw Bad(featureName, $"expire= is '{RuleGrammar.Printable(expireText)}'; use Unix seconds");
                expire = long.Parse(expireText, CultureInfo.InvariantCulture);
            }
            var allow = seen.TryGetValue("allow", out var allowText) ? allowText.Split(',') : [];
            if (allow.Any(a => a.Length == 0)) throw Bad(featureName, "allow= has an empty entry");
            var forward = PortForward.Create(vmName, protocol, port, targetPort, type, allow,
                seen.GetValueOrDefault("iface"), expire, comment);
            // canonical spelling only: what we would write must be what is stored
            if (forward.AllowFrom.Count != allow.Length || forward.AllowFrom.Select(h => h.Value).Where((v, n) => v != allow[n]).Any())
                throw Bad(featureName, $"allow= must list networks in CIDR form with their prefix, each once ({string.Join(",", forward.AllowFrom.Select(h => h.Value))})");
            return forward;
        }
        catch (QubesFirewallException ex) when (ex.ErrorId != ErrorIds.InvalidPortForwardFeature)
        {
            throw Bad(featureName, ex.Message);
        }
    }

    private static QubesFirewallException Bad(string featureName, string why) =>
        new(ErrorIds.InvalidPortForwardFeature, FailureKind.InvalidData,
            $"The port forward feature '{RuleGrammar.Printable(featureName)}' cannot be read: {why}.", featureName);
}

/// <summary>A <c>qubesfirewall.forward.*</c> feature as found on a qube: parsed, or with the reason it is not valid.</summary>
public sealed record PortForwardDeclaration(string VMName, string FeatureName, string FeatureValue, PortForward? Forward, string? Problem)
{
    public bool IsValid => Forward is not null;

    /// <summary>Whose the declaration is (<see cref="DeclarationOwner"/>): a copied one has no <see cref="Forward"/> (never deployed, never counted).</summary>
    public DeclarationOwnership Ownership { get; init; } = DeclarationOwnership.Bound;

    /// <summary>What the feature declares, copied or not (for showing a copy; planners use <see cref="Forward"/>).</summary>
    public PortForward? Declared { get; init; }

    /// <summary>
    /// Every forward feature of the inventory, in qube order then feature name order. With
    /// <paramref name="networkedOnly"/>, only qubes that have a network qube (no forward can reach the
    /// others; dom0's features are not even listed). Every other qube's feature names are looked at, and only
    /// the qubes that have a forward feature are read further (the live backend: one <c>feature.List</c> per qube,
    /// its properties and the declarations' values only where there is one).
    /// </summary>
    public static IReadOnlyList<PortForwardDeclaration> ReadAll(QubesInventory inventory, bool networkedOnly = false)
    {
        var list = new List<PortForwardDeclaration>();
        foreach (var name in inventory.NamesWithFeature(PortForwardFeature.IsForwardFeature, skipAdminVm: networkedOnly))
            if (inventory.Get(name) is var qube && (!networkedOnly || qube.NetVM is not null))
                list.AddRange(Read(qube));
        return list;
    }

    public static IEnumerable<PortForwardDeclaration> Read(Qube qube)
    {
        foreach (var (name, value) in qube.FeaturesNamed(PortForwardFeature.IsForwardFeature))
        {
            var read = DeclarationOwner.Read(qube, name, value, "port forward", rest => PortForwardFeature.Parse(qube.Name, name, rest), DeclarationOwner.Fixes);
            yield return new PortForwardDeclaration(qube.Name, name, value, read.InForce, read.Problem) { Ownership = read.Ownership, Declared = read.Declared };
        }
    }
}

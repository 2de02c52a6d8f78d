using System.Globalization;
using QubesFirewall.Engine.Validation;

namespace QubesFirewall.Engine.Model;

/// <summary>What Enable-QubeInterVmNetwork opens: one protocol, or both (a tcp and a udp link).</summary>
public enum InterVmProtocol { Tcp, Udp, Any }

/// <summary>
/// The destination ports of a link: one port, a range, or every port of the protocol (<see cref="All"/>).
/// Text form (feature names, -Port): <c>5432</c>, <c>8000-8100</c>, <c>all</c>. A range of one port is that port.
/// </summary>
public readonly record struct LinkPorts(int First, int Last)
{
    public const string AllText = "all";

    /// <summary>Every port (no port match at all).</summary>
    public static readonly LinkPorts All = new(0, 0);

    public bool IsAll => First == 0 && Last == 0;

    public bool IsSinglePort => !IsAll && First == Last;

    /// <summary><c>5432</c>, <c>8000-8100</c> or <c>all</c>: the last part of the feature name.</summary>
    public override string ToString() => IsAll ? AllText
        : IsSinglePort ? First.ToString(CultureInfo.InvariantCulture)
        : First.ToString(CultureInfo.InvariantCulture) + "-" + Last.ToString(CultureInfo.InvariantCulture);

    /// <summary>The value of a firewall rule's <c>dstports</c> (null for all ports).</summary>
    public string? DstPorts => IsAll ? null : ToString();

    public static LinkPorts Parse(string? text) =>
        TryParse(text, out var ports, out var error) ? ports
            : throw QubesFirewallException.Invalid("InvalidLinkPort", $"Invalid port '{RuleGrammar.Printable(text)}': {error}", text);

    /// <summary>
    /// Strict: <c>N</c> or <c>N-M</c> with 1 ≤ N ≤ M ≤ 65535 in canonical decimal (no sign, no leading zero), or <c>all</c>.
    /// </summary>
    public static bool TryParse(string? text, out LinkPorts ports, out string error)
    {
        ports = default;
        error = "";
        if (string.IsNullOrEmpty(text)) { error = "a port is required (N, N-M, or all)."; return false; }
        if (text == AllText) { ports = All; return true; }
        var parts = text.Split('-');
        if (parts.Length > 2) { error = "use a port N or a range N-M."; return false; }
        var numbers = new int[2];
        for (var i = 0; i < parts.Length; i++)
        {
            var p = parts[i];
            if (p.Length is 0 or > 5 || !p.All(char.IsAsciiDigit) || p[0] == '0') { error = "ports are decimal numbers 1-65535 (N or N-M)."; return false; }
            numbers[i] = int.Parse(p, CultureInfo.InvariantCulture);
            if (numbers[i] > PortRange.MaxPort) { error = "ports are 1-65535."; return false; }
        }
        var last = parts.Length == 2 ? numbers[1] : numbers[0];
        if (numbers[0] > last) { error = "the first port of a range must not be above the last."; return false; }
        ports = new LinkPorts(numbers[0], last);
        return true;
    }

    /// <summary>-Port values: an int, a string <c>N</c> / <c>N-M</c>, or <c>all</c> (as Get-QubeInterVmNetwork shows the all-ports link).</summary>
    public static LinkPorts FromArgument(object? value)
    {
        switch (value)
        {
            case int i when i is >= 1 and <= PortRange.MaxPort:
                return new LinkPorts(i, i);
            case long l when l is >= 1 and <= PortRange.MaxPort:
                return new LinkPorts((int)l, (int)l);
            case string s:
                return Parse(s.Trim());
            default:
                throw QubesFirewallException.Invalid("InvalidLinkPort",
                    $"Invalid port '{RuleGrammar.Printable(Convert.ToString(value, CultureInfo.InvariantCulture))}': give a port 1-65535 or a range \"N-M\"; leave -Port out to open every port.", value);
        }
    }
}

/// <summary>
/// One inter-qube link: <see cref="From"/> may open connections to <see cref="To"/> on <see cref="Ports"/> of
/// <see cref="Protocol"/>. Declared as the feature <c>qubesfirewall.link.&lt;To&gt;.&lt;tcp|udp&gt;.&lt;ports&gt;</c> of
/// <see cref="From"/> (<see cref="InterVmLinkFeature"/>).
/// </summary>
public sealed record InterVmLink(string From, string To, ForwardProtocol Protocol, LinkPorts Ports)
{
    public string ProtocolText => Protocol == ForwardProtocol.Tcp ? "tcp" : "udp";

    public string FeatureName => InterVmLinkFeature.NameFor(To, Protocol, Ports);

    /// <summary><c>work -> db tcp/5432</c>.</summary>
    public string Text => $"{From} -> {To} {ProtocolText}/{Ports}";

    public override string ToString() => Text;

    /// <summary>Validated names (both qubes, different) and ports.</summary>
    public static InterVmLink Create(string from, string to, ForwardProtocol protocol, LinkPorts ports)
    {
        QubeName.Validate(from);
        QubeName.Validate(to);
        if (from == to)
            throw QubesFirewallException.Invalid("LinkToItself", $"'{from}' cannot be linked to itself: a qube reaches its own services without a network qube.", from);
        if (!ports.IsAll && (ports.First < 1 || ports.Last > PortRange.MaxPort || ports.First > ports.Last))
            throw QubesFirewallException.Invalid("InvalidLinkPort", $"Invalid ports {ports.First}-{ports.Last}: ports are 1-65535, first ≤ last.", ports);
        if (protocol is not (ForwardProtocol.Tcp or ForwardProtocol.Udp))
            throw QubesFirewallException.Invalid("InvalidLinkProtocol", $"A link is tcp or udp, not '{protocol}'.", protocol);
        return new InterVmLink(from, to, protocol, ports);
    }

    /// <summary>The links a request stands for: one per protocol (Any = tcp and udp) and port spec, and with <paramref name="bidirectional"/> the same back.</summary>
    public static IReadOnlyList<InterVmLink> Expand(string from, string to, InterVmProtocol protocol, IReadOnlyList<LinkPorts> ports, bool bidirectional)
    {
        var protocols = protocol switch
        {
            InterVmProtocol.Tcp => new[] { ForwardProtocol.Tcp },
            InterVmProtocol.Udp => [ForwardProtocol.Udp],
            _ => [ForwardProtocol.Tcp, ForwardProtocol.Udp],
        };
        var specs = ports.Count == 0 ? [LinkPorts.All] : ports.Distinct().ToList();
        var links = new List<InterVmLink>();
        foreach (var (a, b) in bidirectional ? new[] { (from, to), (to, from) } : [(from, to)])
            foreach (var p in protocols)
                foreach (var spec in specs)
                    links.Add(Create(a, b, p, spec));
        return links;
    }
}

/// <summary>
/// The feature that declares a link, on the source qube: name <c>qubesfirewall.link.&lt;To&gt;.&lt;tcp|udp&gt;.&lt;N|N-M|all&gt;</c>
/// (read from the right: qube names may contain dots); value the Unix time the link was enabled, in decimal
/// digits (<c>1</c> is fine when written by hand). qubesd allows <c>[a-zA-Z0-9_.-]</c> in feature names, which
/// every part here keeps to.
/// </summary>
public static class InterVmLinkFeature
{
    public const string Prefix = "qubesfirewall.link.";

    public static string NameFor(string to, ForwardProtocol protocol, LinkPorts ports) =>
        Prefix + to + "." + (protocol == ForwardProtocol.Tcp ? "tcp" : "udp") + "." + ports;

    public static bool IsLinkFeature(string name) => name.StartsWith(Prefix, StringComparison.Ordinal);

    /// <summary>Reads a canonical feature name (ports and protocol from the right, the rest is the destination qube's name).</summary>
    public static bool TryParseName(string name, out string to, out ForwardProtocol protocol, out LinkPorts ports)
    {
        to = "";
        protocol = default;
        ports = default;
        if (name is null || !IsLinkFeature(name)) return false;
        var rest = name[Prefix.Length..];
        var lastDot = rest.LastIndexOf('.');
        if (lastDot <= 0) return false;
        var protoDot = rest.LastIndexOf('.', lastDot - 1);
        if (protoDot <= 0) return false;
        var proto = rest[(protoDot + 1)..lastDot];
        if (proto == "tcp") protocol = ForwardProtocol.Tcp;
        else if (proto == "udp") protocol = ForwardProtocol.Udp;
        else return false;
        if (!LinkPorts.TryParse(rest[(lastDot + 1)..], out ports, out _)) return false;
        to = rest[..protoDot];
        return QubeName.IsValid(to);
    }

    /// <summary>The value Enable writes: the Unix time, in seconds.</summary>
    public static string FormatValue(DateTimeOffset now) => now.ToUnixTimeSeconds().ToString(CultureInfo.InvariantCulture);

    /// <summary>1 to 12 decimal digits (a Unix time).</summary>
    public static bool IsValidValue(string? value) => value is { Length: >= 1 and <= 12 } && value.All(char.IsAsciiDigit);

    public static DateTimeOffset? EnabledAt(string? value) => EnabledAtTime(value is null ? null : Trust.DeclarationOwner.Split(value).Declaration);

    private static DateTimeOffset? EnabledAtTime(string? value) =>
        IsValidValue(value) && long.TryParse(value, NumberStyles.None, CultureInfo.InvariantCulture, out var s) && s <= 253402300799
            ? DateTimeOffset.FromUnixTimeSeconds(s) : null;
}

/// <summary>A link feature as found on a qube: its name, value, the link it declares, or why it declares none.</summary>
public sealed record InterVmLinkDeclaration(string From, string FeatureName, string FeatureValue, InterVmLink? Link, string? Problem)
{
    /// <summary>Whose the declaration is (<see cref="Trust.DeclarationOwner"/>): a copied one has no <see cref="Link"/> (never deployed).</summary>
    public Trust.DeclarationOwnership Ownership { get; init; } = Trust.DeclarationOwnership.Bound;

    /// <summary>What the feature declares, copied or not.</summary>
    public InterVmLink? Declared { get; init; }

    /// <summary>The link features of one qube, in name order.</summary>
    public static IReadOnlyList<InterVmLinkDeclaration> Read(Qube qube)
    {
        var list = new List<InterVmLinkDeclaration>();
        foreach (var (name, value) in qube.FeaturesNamed(InterVmLinkFeature.IsLinkFeature))
        {
            var (uuid, rest, problem) = Trust.DeclarationOwner.Split(value);
            var ownership = Trust.DeclarationOwner.Of(qube, uuid);
            if (!InterVmLinkFeature.TryParseName(name, out var to, out var protocol, out var ports))
                list.Add(new(qube.Name, name, value, null, $"The feature name {name} is not qubesfirewall.link.<qube>.<tcp|udp>.<N|N-M|all>."));
            else if (problem is not null)
                list.Add(new(qube.Name, name, value, null, $"The value of {name} cannot be read: {problem}."));
            else if (!InterVmLinkFeature.IsValidValue(rest))
                list.Add(new(qube.Name, name, value, null, $"The value of {name} is '{RuleGrammar.Printable(value)}', not a Unix time (decimal digits), optionally after uuid=<uuid>."));
            else if (to == qube.Name)
                list.Add(new(qube.Name, name, value, null, $"{name} links '{qube.Name}' to itself."));
            else if (ownership == Trust.DeclarationOwnership.Copied)
            {
                var link = new InterVmLink(qube.Name, to, protocol, ports);
                list.Add(new(qube.Name, name, value, null, Trust.DeclarationOwner.CopiedProblem(qube, name, uuid!, Trust.DeclarationOwner.Fixes(link)))
                    { Ownership = ownership, Declared = link });
            }
            else
            {
                var link = new InterVmLink(qube.Name, to, protocol, ports);
                list.Add(new(qube.Name, name, value, link, null) { Ownership = ownership, Declared = link });
            }
        }
        return list;
    }

    /// <summary>Every link feature of every qube, in inventory order (only the qubes that have one are read further than their feature names).</summary>
    public static IReadOnlyList<InterVmLinkDeclaration> ReadAll(QubesInventory inventory) =>
        inventory.NamesWithFeature(InterVmLinkFeature.IsLinkFeature, skipAdminVm: true).SelectMany(n => Read(inventory.Get(n))).ToList();
}

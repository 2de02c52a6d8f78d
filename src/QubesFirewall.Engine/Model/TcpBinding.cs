using System.Globalization;
using QubesFirewall.Engine.Validation;

namespace QubesFirewall.Engine.Model;

/// <summary>
/// One qubes.ConnectTCP binding: the client qube <see cref="From"/> may open TCP connections to port
/// <see cref="Port"/> of the qube <see cref="To"/> through qrexec, with no network between them. The dom0
/// policy allows <c>qubes.ConnectTCP +Port From @default allow target=To</c>; in the target, qrexec's
/// built-in TCP service connects to <c>127.0.0.1:Port</c>. With <see cref="Permanent"/>, the client listens on
/// <c>127.0.0.1:LocalPort</c> from boot on (a systemd socket unit, started by its rc.local) and runs
/// <c>qrexec-client-vm @default qubes.ConnectTCP+Port</c> for each connection; without it, nothing listens
/// until the user runs <see cref="Command"/> in the client.
/// <para>Declared in a feature of the client, <see cref="TcpBindingFeature"/> (name and value grammar there).
/// Values are validated on construction (<see cref="Create"/>) and on parsing, so everything in a record is
/// safe to write into policy lines, unit files and shell text.</para>
/// </summary>
public sealed record TcpBinding
{
    public const string Service = "qubes.ConnectTCP";

    /// <summary>The client qube (whose feature declares the binding, and where the listener runs).</summary>
    public required string From { get; init; }

    /// <summary>The target qube: the policy redirects the client's <c>@default</c> calls there.</summary>
    public required string To { get; init; }

    /// <summary>The port in the target (the argument of qubes.ConnectTCP), 1-65535.</summary>
    public required int Port { get; init; }

    /// <summary>The port the client listens on (127.0.0.1 only), 1-65535; equal to <see cref="Port"/> unless given.</summary>
    public required int LocalPort { get; init; }

    /// <summary>Whether the client listens from boot on (socket unit installed by its rc.local).</summary>
    public required bool Permanent { get; init; }

    public string FeatureName => TcpBindingFeature.NameFor(To, Port);

    public string FeatureValue => TcpBindingFeature.FormatValue(this);

    /// <summary>The qrexec call: <c>qubes.ConnectTCP+444</c>.</summary>
    public string Call => Service + "+" + Port.ToString(CultureInfo.InvariantCulture);

    /// <summary>What the user runs in the client for a listener of the moment (qvm-connect-tcp listens on every address of the client).</summary>
    public string Command => $"qvm-connect-tcp {LocalPort.ToString(CultureInfo.InvariantCulture)}:@default:{Port.ToString(CultureInfo.InvariantCulture)}";

    /// <summary>The line of the module's dom0 qrexec policy file that allows the binding.</summary>
    public string PolicyLine => $"{Service}\t+{Port.ToString(CultureInfo.InvariantCulture)}\t{From}\t@default\tallow target={To}";

    /// <summary>The names of the systemd units of permanent bindings in the client start with this.</summary>
    public const string UnitPrefix = "qubesfirewall-tcp-";

    /// <summary>The socket unit that listens on <paramref name="localPort"/> in the client (permanent bindings).</summary>
    public static string SocketUnitName(int localPort) => UnitPrefix + localPort.ToString(CultureInfo.InvariantCulture) + ".socket";

    /// <summary>The templated service unit its socket starts, one instance per connection.</summary>
    public static string ServiceUnitName(int localPort) => UnitPrefix + localPort.ToString(CultureInfo.InvariantCulture) + "@.service";

    /// <summary>Short form for messages: <c>untrusted -> mytcp-service:444</c>, plus the local port when permanent.</summary>
    public string Text => $"{From} -> {To}:{Port.ToString(CultureInfo.InvariantCulture)}" +
        (Permanent ? $" (listening on 127.0.0.1:{LocalPort.ToString(CultureInfo.InvariantCulture)} in {From})" : "");

    public override string ToString() => Text;

    /// <summary>
    /// Builds a binding from user input, validating it: both names as qubesd accepts them, not dom0 (dom0
    /// calls services with qrexec-client, not qrexec-client-vm, and exposing a dom0 port to a qube is what
    /// qubes.ConnectTCP's default deny protects against), not the same qube twice, ports 1-65535.
    /// </summary>
    public static TcpBinding Create(string from, string to, int port, int? localPort = null, bool permanent = false)
    {
        QubeName.Validate(from);
        QubeName.Validate(to);
        if (from == "dom0" || to == "dom0")
            throw QubesFirewallException.Invalid(ErrorIds.Dom0NotAllowed,
                $"A qubes.ConnectTCP binding cannot {(from == "dom0" ? "start in" : "lead to")} dom0: dom0 runs no qrexec-client-vm, and a qube reaching a TCP port of dom0 is what the default policy forbids. Bind two qubes.", from == "dom0" ? from : to);
        if (from == to)
            throw QubesFirewallException.Invalid(ErrorIds.SameQube,
                $"'{from}' cannot be bound to itself: it reaches its own port {port.ToString(CultureInfo.InvariantCulture)} on 127.0.0.1 already.", from);
        return new TcpBinding
        {
            From = from,
            To = to,
            Port = ValidatePort(port, "Port"),
            LocalPort = ValidatePort(localPort ?? port, "LocalPort"),
            Permanent = permanent,
        };
    }

    public static int ValidatePort(int port, string what)
    {
        if (port is < 1 or > PortRange.MaxPort)
            throw QubesFirewallException.Invalid(ErrorIds.InvalidTcpBindingPort,
                $"{what} {port.ToString(CultureInfo.InvariantCulture)} is not a TCP port: use 1-65535.", port);
        return port;
    }
}

/// <summary>
/// The qube feature that declares a qubes.ConnectTCP binding, set on the client qube.
/// <para>Name: <c>qubesfirewall.tcp.&lt;target&gt;.&lt;port&gt;</c>, e.g. <c>qubesfirewall.tcp.mytcp-service.444</c>: the
/// target qube's name (which may contain dots: the name is read from the right, the port being everything
/// after the last dot) and the port in the target, in decimal without leading zeros.</para>
/// <para>Value: two ASCII words <c>key=value</c> separated by one space, written in this order:</para>
/// <list type="bullet">
/// <item><c>localport=&lt;1-65535&gt;</c>: the port the client listens on (127.0.0.1), without leading zeros.</item>
/// <item><c>permanent=yes|no</c>: <c>yes</c> when the client listens from boot on (socket unit from its rc.local),
/// <c>no</c> when only the dom0 policy is kept (the user runs <c>qvm-connect-tcp</c> when needed).</item>
/// </list>
/// <para>Example: <c>localport=10444 permanent=yes</c>. Parsing is strict: both keys exactly once, in either order,
/// no other key, no empty value, no double or trailing space. Writing always produces the canonical form.</para>
/// </summary>
public static class TcpBindingFeature
{
    public const string Prefix = "qubesfirewall.tcp.";

    public static string NameFor(string to, int port) => Prefix + to + "." + port.ToString(CultureInfo.InvariantCulture);

    public static bool IsBindingFeature(string name) => name.StartsWith(Prefix, StringComparison.Ordinal);

    /// <summary>
    /// Reads a feature name from the right: the port after the last dot, the target before it. Strict (the
    /// default) accepts only the canonical spelling; lenient also reads leading zeros (so Remove finds a feature
    /// written by hand). The target must be a valid qube name either way.
    /// </summary>
    public static bool TryParseName(string name, out string to, out int port, bool lenient = false)
    {
        to = "";
        port = 0;
        if (!IsBindingFeature(name)) return false;
        var rest = name[Prefix.Length..];
        var dot = rest.LastIndexOf('.');
        if (dot <= 0 || dot == rest.Length - 1) return false;
        var digits = rest[(dot + 1)..];
        if (digits.Length > 7 || !digits.All(char.IsAsciiDigit)) return false;
        if (!lenient && digits.Length > 1 && digits[0] == '0') return false;
        var value = int.Parse(digits, CultureInfo.InvariantCulture);
        if (value is < 1 or > PortRange.MaxPort) return false;
        var target = rest[..dot];
        if (!QubeName.IsValid(target)) return false;
        to = target;
        port = value;
        return true;
    }

    public static string FormatValue(TcpBinding binding)
    {
        var text = "localport=" + binding.LocalPort.ToString(CultureInfo.InvariantCulture) + " permanent=" + (binding.Permanent ? "yes" : "no");
        QubeFeature.ValidateValue(binding.FeatureName, text);
        return text;
    }

    /// <summary>Reads a declaration of qube <paramref name="from"/>; throws InvalidTcpBindingFeature with the reason.</summary>
    public static TcpBinding Parse(string from, string featureName, string? value)
    {
        if (!TryParseName(featureName, out var to, out var port))
            throw Bad(featureName, $"the name must be {Prefix}<target qube>.<port>, with a valid qube name and a port 1-65535 written without leading zeros");
        if (value is null) throw Bad(featureName, "it has no value");
        var seen = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (var word in value.Split(' '))
        {
            if (word.Length == 0) throw Bad(featureName, "words are separated by exactly one space, with none at either end");
            var eq = word.IndexOf('=');
            if (eq <= 0) throw Bad(featureName, $"'{RuleGrammar.Printable(word)}' is not a key=value word");
            var key = word[..eq];
            var val = word[(eq + 1)..];
            if (key is not ("localport" or "permanent"))
                throw Bad(featureName, $"unknown key '{RuleGrammar.Printable(key)}' (known: localport, permanent)");
            if (val.Length == 0) throw Bad(featureName, $"{key}= has no value");
            if (!seen.TryAdd(key, val)) throw Bad(featureName, $"{key}= is given twice");
        }
        if (!seen.TryGetValue("localport", out var localText)) throw Bad(featureName, "localport= is missing");
        if (!seen.TryGetValue("permanent", out var permanentText)) throw Bad(featureName, "permanent= is missing");
        if (localText.Length > 5 || !localText.All(char.IsAsciiDigit) || (localText.Length > 1 && localText[0] == '0'))
            throw Bad(featureName, $"localport= is '{RuleGrammar.Printable(localText)}'; use a port 1-65535 without leading zeros");
        var permanent = permanentText switch
        {
            "yes" => true,
            "no" => false,
            _ => throw Bad(featureName, $"permanent= is '{RuleGrammar.Printable(permanentText)}'; use yes or no"),
        };
        try
        {
            return TcpBinding.Create(from, to, port, int.Parse(localText, CultureInfo.InvariantCulture), permanent);
        }
        catch (QubesFirewallException ex)
        {
            throw Bad(featureName, ex.Message);
        }
    }

    private static QubesFirewallException Bad(string featureName, string why) =>
        new(ErrorIds.InvalidTcpBindingFeature, FailureKind.InvalidData,
            $"The qubes.ConnectTCP binding feature '{RuleGrammar.Printable(featureName)}' cannot be read: {why}.", featureName);
}

/// <summary>A <c>qubesfirewall.tcp.*</c> feature as found on a client qube: parsed, or with the reason it is not valid.</summary>
public sealed record TcpBindingDeclaration(string From, string FeatureName, string FeatureValue, TcpBinding? Binding, string? Problem)
{
    public bool IsValid => Binding is not null;

    /// <summary>Whose the declaration is (<see cref="DeclarationOwner"/>): a copied one has no <see cref="Binding"/> (never deployed, never counted).</summary>
    public DeclarationOwnership Ownership { get; init; } = DeclarationOwnership.Bound;

    /// <summary>What the feature declares, copied or not.</summary>
    public TcpBinding? Declared { get; init; }

    /// <summary>Every binding feature of the inventory, in qube order then feature name order (dom0 has none: it cannot be a client).</summary>
    public static IReadOnlyList<TcpBindingDeclaration> ReadAll(QubesInventory inventory)
    {
        var list = new List<TcpBindingDeclaration>();
        foreach (var name in inventory.NamesWithFeature(TcpBindingFeature.IsBindingFeature, skipAdminVm: true))
            list.AddRange(Read(inventory.Get(name)));
        return list;
    }

    public static IEnumerable<TcpBindingDeclaration> Read(Qube qube)
    {
        foreach (var (name, value) in qube.FeaturesNamed(TcpBindingFeature.IsBindingFeature))
        {
            var read = DeclarationOwner.Read(qube, name, value, "qubes.ConnectTCP binding", rest => TcpBindingFeature.Parse(qube.Name, name, rest), DeclarationOwner.Fixes);
            yield return new TcpBindingDeclaration(qube.Name, name, value, read.InForce, read.Problem) { Ownership = read.Ownership, Declared = read.Declared };
        }
    }
}

/// <summary>
/// A declared qubes.ConnectTCP binding as Get-QubeTcpBinding shows it: the declaration's values under the
/// names of Add-QubeTcpBinding's parameters (so objects pipe into Remove-QubeTcpBinding), the policy line
/// that allows it and how the client reaches it.
/// </summary>
public sealed class QubeTcpBinding
{
    public QubeTcpBinding(TcpBindingDeclaration declaration)
    {
        From = declaration.From;
        FeatureName = declaration.FeatureName;
        FeatureValue = declaration.FeatureValue;
        // a copy (qvm-clone, restore) shows what it declares, with its Problem: never deployed
        Binding = declaration.Binding ?? (declaration.Ownership == DeclarationOwnership.Copied ? declaration.Declared : null);
        Problem = declaration.Problem;
        Ownership = declaration.Ownership;
        if (Binding is not null)
            (To, Port) = (Binding.To, Binding.Port);
        else if (TcpBindingFeature.TryParseName(declaration.FeatureName, out var to, out var port, lenient: true))
            (To, Port) = (to, port);
    }

    public QubeTcpBinding(TcpBinding binding)
        : this(new TcpBindingDeclaration(binding.From, binding.FeatureName, binding.FeatureValue, binding, null))
    {
    }

    /// <summary>The parsed declaration (null when the feature cannot be read).</summary>
    internal TcpBinding? Binding { get; }

    /// <summary>The client qube.</summary>
    public string From { get; }

    /// <summary>The target qube (null when the feature name cannot be read).</summary>
    public string? To { get; }

    /// <summary>The port in the target.</summary>
    public int? Port { get; }

    /// <summary>The port the client listens on, 127.0.0.1 only.</summary>
    public int? LocalPort => Binding?.LocalPort;

    public bool Permanent => Binding?.Permanent ?? false;

    /// <summary>The qrexec call: <c>qubes.ConnectTCP+444</c>.</summary>
    public string? Call => Binding?.Call;

    /// <summary>The line of the dom0 policy file that allows the binding.</summary>
    public string? PolicyLine => Binding?.PolicyLine;

    /// <summary>The systemd socket unit that listens in the client (permanent bindings only).</summary>
    public string? Unit => Binding is { Permanent: true } b ? TcpBinding.SocketUnitName(b.LocalPort) : null;

    /// <summary>The command that listens for the moment, run in the client (the way to use a binding that is not permanent).</summary>
    public string? Command => Binding?.Command;

    public string FeatureName { get; }

    public string FeatureValue { get; }

    /// <summary>False when the feature cannot be read (see <see cref="Problem"/>); nothing is generated for it.</summary>
    public bool IsValid => Binding is not null;

    public string? Problem { get; }

    /// <summary>Bound to its client's uuid, Legacy (no uuid yet: adopt it with Add-QubeTcpBinding), or Copied (never deployed; see Problem).</summary>
    public DeclarationOwnership Ownership { get; }

    public string Text => Binding?.Text ?? $"{FeatureName} of {From} (invalid)";

    public override string ToString() => Text;
}

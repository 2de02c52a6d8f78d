using System.Text.RegularExpressions;

namespace QubesFirewall.Engine.Model;

/// <summary>Whose a declaration is.</summary>
public enum DeclarationOwnership
{
    /// <summary>It carries the uuid of the qube it is on: it is in force.</summary>
    Bound,

    /// <summary>
    /// It carries no uuid (written before declarations were bound to their qube, or on a root without uuids): in
    /// force, listed so the user can adopt it (re-declare it with its cmdlet, which writes the qube's uuid).
    /// </summary>
    Legacy,

    /// <summary>
    /// It carries another qube's uuid: <c>qvm-clone</c>, a backup restore or a disposable copied the feature. Never
    /// deployed and never counted; shown with a Problem until adopted (declared again on this qube) or removed.
    /// </summary>
    Copied,
}

/// <summary>
/// Binds a declaration feature's value to the qube it belongs to: the value starts with <c>uuid=&lt;uuid&gt; </c>
/// (the qube's qubesd property <c>uuid</c>, write-once and never cloned: core-admin <c>qubes/vm/__init__.py</c> lines
/// 250-256), then the declaration's own words, unchanged. A clone or a restored qube gets a new uuid, so a copied
/// declaration shows as <see cref="DeclarationOwnership.Copied"/>.
/// </summary>
public static partial class DeclarationOwner
{
    public const string Key = "uuid=";

    [GeneratedRegex(@"\Auuid=([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}) (?=\S)", RegexOptions.CultureInvariant)]
    private static partial Regex Prefix();

    /// <summary>The value to store: <paramref name="declaration"/> bound to <paramref name="uuid"/> (as it is when the qube's uuid is unknown).</summary>
    public static string Bind(string? uuid, string declaration) => Normalize(uuid) is { } u ? Key + u + " " + declaration : declaration;

    /// <summary>
    /// Splits a stored value into the uuid it is bound to (null: none) and the declaration's own words. A value
    /// starting with <c>uuid=</c> that is not a lower-case uuid followed by one space and more is refused (null, the reason).
    /// </summary>
    public static (string? Uuid, string Declaration, string? Problem) Split(string value)
    {
        if (!value.StartsWith(Key, StringComparison.Ordinal)) return (null, value, null);
        var m = Prefix().Match(value);
        return m.Success ? (m.Groups[1].Value, value[m.Length..], null)
            : (null, value, "its uuid= word is not a lower-case UUID followed by one space and the declaration");
    }

    /// <summary>Whose the stored declaration is, for the qube it is on.</summary>
    public static DeclarationOwnership Of(Qube qube, string? storedUuid) =>
        storedUuid is null ? DeclarationOwnership.Legacy
        : Normalize(qube.Uuid) is not { } own || own == storedUuid ? DeclarationOwnership.Bound
        : DeclarationOwnership.Copied;

    /// <summary>
    /// Reads one declaration feature of <paramref name="qube"/> (a port forward, a binding): splits off the uuid,
    /// parses the rest with <paramref name="parse"/>, and keeps a copy out of force. <c>InForce</c> is what is
    /// deployed (null: unreadable or copied), <c>Declared</c> what the words say (also for a copy).
    /// </summary>
    public static (T? InForce, T? Declared, string? Problem, DeclarationOwnership Ownership) Read<T>(Qube qube, string featureName, string value,
        string kind, Func<string, T> parse, Func<T, (string Adopt, string Remove)> fixes) where T : class
    {
        var (uuid, rest, problem) = Split(value);
        var ownership = Of(qube, uuid);
        if (problem is not null) return (null, null, $"The {kind} feature '{RuleGrammar.Printable(featureName)}' cannot be read: {problem}.", ownership);
        T declared;
        try
        {
            declared = parse(rest);
        }
        catch (QubesFirewallException ex)
        {
            return (null, null, ex.Message, ownership);
        }
        return ownership == DeclarationOwnership.Copied
            ? (null, declared, CopiedProblem(qube, featureName, uuid!, fixes(declared)), ownership)
            : (declared, declared, null, ownership);
    }

    /// <summary>The Problem of a copied declaration: what it is, and the two fixes.</summary>
    public static string CopiedProblem(Qube qube, string featureName, string storedUuid, (string Adopt, string Remove) fixes) => CopiedProblem(qube, featureName, storedUuid, fixes.Adopt, fixes.Remove);

    public static string CopiedProblem(Qube qube, string featureName, string storedUuid, string adoptCommand, string removeCommand) =>
        $"The declaration {featureName} of '{qube.Name}' was copied from another qube (it is bound to uuid {storedUuid}, '{qube.Name}' has {qube.Uuid}): " +
        "qvm-clone, a backup restore and disposables copy every feature. It is never deployed. " +
        $"To keep it for '{qube.Name}', adopt it: {adoptCommand}; otherwise remove it: {removeCommand}.";

    /// <summary>The two fixes for a copied port forward: adopt it (declare it again on this qube), or remove the feature.</summary>
    public static (string Adopt, string Remove) Fixes(PortForward f)
    {
        var args = $"-VMName {f.VMName} -Port {f.Port.ToString(System.Globalization.CultureInfo.InvariantCulture)} -Protocol {f.Protocol}";
        return ($"Get-QubePortForward {args} | Add-QubePortForward", $"Remove-QubePortForward {args}");
    }

    /// <summary>The two fixes for a copied qubes.ConnectTCP binding.</summary>
    public static (string Adopt, string Remove) Fixes(TcpBinding b)
    {
        var port = b.Port.ToString(System.Globalization.CultureInfo.InvariantCulture);
        return ($"Add-QubeTcpBinding -From {b.From} -To {b.To} -Port {port} -LocalPort {b.LocalPort.ToString(System.Globalization.CultureInfo.InvariantCulture)}{(b.Permanent ? " -Permanent" : "")}",
            $"Remove-QubeTcpBinding -From {b.From} -To {b.To} -Port {port}");
    }

    /// <summary>The two fixes for a copied inter-qube link.</summary>
    public static (string Adopt, string Remove) Fixes(InterVmLink l)
    {
        var args = $"-From {l.From} -To {l.To} -Protocol {l.Protocol}{(l.Ports.IsAll ? "" : " -Port " + l.Ports)}";
        return ("Enable-QubeInterVmNetwork " + args, "Disable-QubeInterVmNetwork " + args);
    }

    private static string? Normalize(string? uuid) =>
        uuid is not null && Guid.TryParseExact(uuid, "D", out var g) ? g.ToString("D") : null;
}

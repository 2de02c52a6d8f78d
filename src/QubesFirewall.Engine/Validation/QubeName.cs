using System.Text.RegularExpressions;

namespace QubesFirewall.Engine.Validation;

/// <summary>
/// Qube names as qubesd accepts them (core-admin <c>qubes.vm.validate_name</c>): at most 31
/// characters, an ASCII letter first, then ASCII letters, digits, <c>_</c>, <c>.</c> and <c>-</c>;
/// not <c>none</c> nor <c>default</c> (those spell "no qube" and "the default" in property values),
/// not <c>Domain-0</c>, and not ending in <c>-dm</c> (reserved for device-model stubdomains).
/// </summary>
public static partial class QubeName
{
    public const int MaxLength = 31;

    [GeneratedRegex(@"\A[a-zA-Z][a-zA-Z0-9_.-]*\z", RegexOptions.CultureInvariant)]
    private static partial Regex Allowed();

    public static bool IsValid(string? name) => Problem(name) is null;

    /// <summary>Why qubesd would refuse this name, or null when it is valid.</summary>
    public static string? Problem(string? name)
    {
        if (name is null) return "A qube name is required.";
        if (name.Length == 0) return "A qube name cannot be empty.";
        if (name.Length > MaxLength) return $"A qube name must be shorter than 32 characters ('{PrintableAscii.Printable(name)}' has {name.Length}).";
        if (name[0] is (>= '0' and <= '9') or '_' or '.' or '-')
            return $"A qube name cannot start with a hyphen, underscore, dot or digit: '{PrintableAscii.Printable(name)}'.";
        if (name.IndexOfAny(['*', '?', '[']) >= 0)
            return $"'{PrintableAscii.Printable(name)}' is a wildcard, and this parameter takes one qube by its name. To act on several qubes, pipe them in: Get-Qube {PrintableAscii.Printable(name)} | ...";
        if (!Allowed().IsMatch(name))
            return $"A qube name may contain only ASCII letters, digits, '_', '.' and '-', starting with a letter: '{PrintableAscii.Printable(name)}' is not valid.";
        if (name == "Domain-0") return "A qube cannot be named 'Domain-0'.";
        if (name is "none" or "default") return $"A qube cannot be named '{name}': the word means 'no qube' or 'the default' in property values.";
        if (name.EndsWith("-dm", StringComparison.Ordinal)) return $"A qube name cannot end with '-dm' (reserved for device-model stubdomains): '{name}'.";
        return null;
    }

    /// <summary>Returns <paramref name="name"/> when valid, else throws InvalidQubeName.</summary>
    public static string Validate(string? name)
    {
        var problem = Problem(name);
        if (problem is not null) throw QubesFirewallException.Invalid(ErrorIds.InvalidQubeName, problem, name);
        return name!;
    }
}

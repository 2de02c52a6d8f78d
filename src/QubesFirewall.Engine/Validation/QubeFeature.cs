using System.Text.RegularExpressions;
using static QubesFirewall.Engine.Validation.PrintableAscii;

namespace QubesFirewall.Engine.Validation;

/// <summary>Feature names and values as qubesd's admin.vm.feature.Set accepts them.</summary>
public static partial class QubeFeature
{
    [GeneratedRegex(@"\A[a-zA-Z0-9_.-]+\z", RegexOptions.CultureInvariant)]
    private static partial Regex NamePattern();

    /// <summary>Feature names as qubesd's admin.vm.feature.Set accepts them: <c>[a-zA-Z0-9_.-]+</c>.</summary>
    public static bool IsValidName(string? name) => name is not null && NamePattern().IsMatch(name);

    /// <summary>Feature values as qubesd accepts them: printable ASCII, 0x20 to 0x7E (the empty value included).</summary>
    public static bool IsValidValue(string? value) => value is not null && FirstNonPrintable(value) < 0;

    public static void ValidateName(string? name)
    {
        if (name is null || !NamePattern().IsMatch(name))
            throw QubesFirewallException.Invalid(ErrorIds.InvalidFeatureName,
                $"'{Printable(name)}' is not a valid feature name: qubesd accepts only ASCII letters, digits, '_', '.' and '-' (at least one character).", name);
    }

    public static void ValidateValue(string name, string? value)
    {
        if (value is null)
            throw QubesFirewallException.Invalid(ErrorIds.InvalidFeatureValue, $"The value of feature '{Printable(name)}' is missing (use the empty string for an empty value).", name);
        var bad = FirstNonPrintable(value);
        if (bad >= 0)
            throw QubesFirewallException.Invalid(ErrorIds.InvalidFeatureValue,
                $"The value of feature '{Printable(name)}' contains {Describe(value[bad])} at position {bad}: qubesd accepts only printable ASCII (space to '~'), without newlines, tabs or non-ASCII letters.", value);
    }
}

using System.Globalization;
using System.Management.Automation;
using QubesFirewall.Engine;

namespace QubesFirewall.PowerShell;

/// <summary>
/// Turns an empty string into null, so objects from CSV files (where a missing value is an
/// empty cell) bind to optional parameters instead of failing the conversion. A value of white space
/// only is refused with a clear error: it is not "absent" (-DstHost ' ' must never become a rule
/// without a host, which accepts everything).
/// </summary>
[AttributeUsage(AttributeTargets.Property | AttributeTargets.Field)]
public sealed class EmptyAsNullAttribute : ArgumentTransformationAttribute
{
    public override object? Transform(EngineIntrinsics engineIntrinsics, object? inputData)
    {
        var value = inputData is PSObject pso ? pso.BaseObject : inputData;
        if (value is string s && s.Length == 0) return null;
        if (value is string w && string.IsNullOrWhiteSpace(w)) throw WhiteSpace();
        if (value is object[] items && items.Any(i => (i is PSObject p ? p.BaseObject : i) is string x && x.Length > 0 && string.IsNullOrWhiteSpace(x))) throw WhiteSpace();
        return inputData;
    }

    private static ArgumentTransformationMetadataException WhiteSpace() =>
        new("The value is only white space. Give a value, or leave the parameter out (an empty string also means 'not given').");
}

/// <summary>
/// A port, 1-65535, on an optional parameter that <see cref="EmptyAsNullAttribute"/> may have made null (an empty CSV cell:
/// not given). ValidateRange refuses such a null ("argument is null"), so the cell would fail a whole Import-Csv pipeline.
/// </summary>
[AttributeUsage(AttributeTargets.Property | AttributeTargets.Field)]
public sealed class ValidateOptionalPortAttribute : ValidateArgumentsAttribute
{
    protected override void Validate(object? arguments, EngineIntrinsics engineIntrinsics)
    {
        var value = arguments is PSObject pso ? pso.BaseObject : arguments;
        if (value is null) return;
        if (value is not int port || port < 1 || port > 65535)
            throw new ValidationMetadataException($"The port {value} is not between 1 and 65535.");
    }
}

/// <summary>Reads -Expire: a DateTime/DateTimeOffset, a TimeSpan from now, Unix seconds, or "+SECONDS".</summary>
public static class ExpireArgument
{
    public static long? ToUnixTime(object? value, DateTimeOffset now)
    {
        value = value is PSObject pso ? pso.BaseObject : value;
        if (value is null) return null;
        long result;
        try
        {
            result = value switch
            {
                DateTime dt => new DateTimeOffset(dt.Kind == DateTimeKind.Unspecified ? DateTime.SpecifyKind(dt, DateTimeKind.Local) : dt).ToUnixTimeSeconds(),
                DateTimeOffset dto => dto.ToUnixTimeSeconds(),
                TimeSpan span => (now + span).ToUnixTimeSeconds(),
                int i => i,
                long l => l,
                string s => FromString(s.Trim(), now),
                _ => throw Bad(value.ToString()),
            };
        }
        catch (Exception ex) when (ex is ArgumentOutOfRangeException or OverflowException)
        {
            throw OutOfRange(value);
        }
        if (result > MaxUnixTime) throw OutOfRange(value);
        if (result <= now.ToUnixTimeSeconds())
            throw QubesFirewallException.Invalid(ErrorIds.ExpireInPast,
                $"The expiry time {DateTimeOffset.FromUnixTimeSeconds(Math.Max(0, result)).LocalDateTime:u} is not in the future: the rule would never apply.", value);
        return result;
    }

    /// <summary>9999-12-31 23:59:59 UTC, the last time a rule can expire at.</summary>
    public const long MaxUnixTime = 253402300799;

    private static QubesFirewallException OutOfRange(object value) => QubesFirewallException.Invalid(ErrorIds.InvalidExpire,
        $"The expiry time '{Engine.Model.RuleGrammar.Printable(value.ToString())}' is out of range: it must fall before the year 10000 (give a date, a TimeSpan such as (New-TimeSpan -Days 7), Unix seconds or +SECONDS).", value);

    private static long FromString(string s, DateTimeOffset now)
    {
        if (s.StartsWith('+') && s.Length > 1 && s[1..].All(char.IsAsciiDigit) && s.Length <= 13)
            return now.ToUnixTimeSeconds() + long.Parse(s[1..], CultureInfo.InvariantCulture);
        if (s.Length is > 0 and <= 12 && s.All(char.IsAsciiDigit))
            return long.Parse(s, CultureInfo.InvariantCulture);
        if (DateTimeOffset.TryParse(s, CultureInfo.InvariantCulture, DateTimeStyles.AssumeLocal, out var dto)) return dto.ToUnixTimeSeconds();
        if (TimeSpan.TryParse(s, CultureInfo.InvariantCulture, out var span)) return (now + span).ToUnixTimeSeconds();
        throw Bad(s);
    }

    private static QubesFirewallException Bad(string? s) => QubesFirewallException.Invalid(ErrorIds.InvalidExpire,
        $"Cannot read '{Engine.Model.RuleGrammar.Printable(s)}' as an expiry time: give a DateTime, a TimeSpan from now, Unix seconds or +SECONDS.", s);
}

/// <summary>
/// One line of rule text for -Rule. A type of its own, built only from a string, so PowerShell binds
/// piped strings here but never turns an arbitrary object into its "@{...}" text: such objects bind
/// the rule's fields by property name instead (a CSV row with only VMName and Action, say).
/// </summary>
public sealed class RuleLine(string text)
{
    public string Text { get; } = text ?? "";

    public override string ToString() => Text;
}

/// <summary>
/// Makes a piped string a <see cref="RuleLine"/> before PowerShell tries to bind it, so a line binds -Rule in the
/// binder's first pass (no coercion needed). Without it each line first went through the by-property-name pass,
/// ten member look-ups on the string for the fields' parameters, most of a text pipeline's time.
/// </summary>
[AttributeUsage(AttributeTargets.Property | AttributeTargets.Field)]
public sealed class RuleLineTransformationAttribute : ArgumentTransformationAttribute
{
    public override object? Transform(EngineIntrinsics engineIntrinsics, object? inputData) =>
        (inputData is PSObject pso ? pso.BaseObject : inputData) is string text ? new RuleLine(text) : inputData;
}

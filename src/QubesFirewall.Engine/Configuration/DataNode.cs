using System.Globalization;

namespace QubesFirewall.Engine.Configuration;

/// <summary>
/// A value of a configuration file as read, before validation: a map, a list, a string, an integer or a
/// boolean, each with the line it starts on. Both readers (the .psd1 subset and JSON) produce these, so
/// one validator (<see cref="ConfigurationReader"/>) checks every value and names the line of what it refuses.
/// </summary>
public abstract record DataNode(int Line)
{
    /// <summary>What the value is, for messages: "a string", "a list", ...</summary>
    public abstract string Describe();
}

/// <summary>One key of a map, with its line.</summary>
public sealed record DataEntry(string Key, int Line, DataNode Value);

/// <summary>A map (<c>@{ }</c>, a JSON object): keys in file order, each once.</summary>
public sealed record DataMap(int Line, IReadOnlyList<DataEntry> Entries) : DataNode(Line)
{
    public override string Describe() => "a map";
}

/// <summary>A list (<c>@( )</c>, a JSON array).</summary>
public sealed record DataList(int Line, IReadOnlyList<DataNode> Items) : DataNode(Line)
{
    public override string Describe() => "a list";
}

public sealed record DataString(int Line, string Value) : DataNode(Line)
{
    public override string Describe() => "a string";
}

public sealed record DataInteger(int Line, long Value) : DataNode(Line)
{
    public override string Describe() => "a number";

    public override string ToString() => Value.ToString(CultureInfo.InvariantCulture);
}

public sealed record DataBoolean(int Line, bool Value) : DataNode(Line)
{
    public override string Describe() => "a boolean";
}

/// <summary>Limits every reader applies: the file comes from a qube and is untrusted.</summary>
public static class DataLimits
{
    /// <summary>Largest file read: 4 MiB (a thousand qubes with forty rules each fit several times).</summary>
    public const int MaxBytes = 4 * 1024 * 1024;

    /// <summary>Deepest nesting: the format needs four levels (file, qubes, qube, forward).</summary>
    public const int MaxDepth = 8;

    /// <summary>Longest string value.</summary>
    public const int MaxStringLength = 4096;

    internal static QubesFirewallException Error(int line, string why) =>
        new(ErrorIds.InvalidConfiguration, FailureKind.InvalidData, $"line {line.ToString(CultureInfo.InvariantCulture)}: {why}", line);

    internal static void CheckSize(long bytes)
    {
        if (bytes > MaxBytes)
            throw new QubesFirewallException(ErrorIds.ConfigurationTooLarge, FailureKind.InvalidData,
                $"The configuration file is {bytes.ToString(CultureInfo.InvariantCulture)} bytes; at most {MaxBytes.ToString(CultureInfo.InvariantCulture)} are read.", bytes);
    }
}

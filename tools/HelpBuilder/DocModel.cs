// The model of one cmdlet help page written in PlatyPS's markdown layout (DocParser.cs builds it).
// Public so tests can read docs/cmdlets and compare them with the cmdlets' metadata.

using System.Globalization;

namespace QubesFirewall.HelpBuilder;

/// <summary>One cmdlet's help page (docs/cmdlets/Verb-Noun.md).</summary>
public sealed class CmdletDoc
{
    public required string SourcePath { get; init; }
    /// <summary>Front matter keys and values as written (empty when there is none).</summary>
    public required IReadOnlyDictionary<string, string> FrontMatter { get; init; }
    /// <summary>The cmdlet name, e.g. <c>Get-Qube</c>.</summary>
    public required string Name { get; init; }
    public string Verb => Name[..Name.IndexOf('-')];
    public string Noun => Name[(Name.IndexOf('-') + 1)..];
    public required string Synopsis { get; init; }
    /// <summary>The DESCRIPTION section, one entry per paragraph.</summary>
    public required IReadOnlyList<string> Description { get; init; }
    /// <summary>The SYNTAX section: one entry per parameter set, in document order.</summary>
    public required IReadOnlyList<SyntaxDoc> Syntax { get; init; }
    /// <summary>Parameter set name → parameter names (no dash), in syntax-line order.</summary>
    public IReadOnlyDictionary<string, IReadOnlyList<string>> ParameterSets =>
        Syntax.ToDictionary(s => s.ParameterSetName, s => s.ParameterNames, StringComparer.OrdinalIgnoreCase);
    /// <summary>The set whose SYNTAX heading is marked "(Default)", if any.</summary>
    public string? DefaultParameterSet => Syntax.FirstOrDefault(s => s.IsDefault)?.ParameterSetName;
    /// <summary>The PARAMETERS section in document order (CommonParameters excluded).</summary>
    public required IReadOnlyList<ParameterDoc> Parameters { get; init; }
    public required IReadOnlyList<ExampleDoc> Examples { get; init; }
    public required IReadOnlyList<TypeDoc> Inputs { get; init; }
    public required IReadOnlyList<TypeDoc> Outputs { get; init; }
    /// <summary>The NOTES section, one entry per paragraph.</summary>
    public required IReadOnlyList<string> Notes { get; init; }
    public required IReadOnlyList<LinkDoc> RelatedLinks { get; init; }
    /// <summary>The front matter's "online version" when it is set.</summary>
    public string? OnlineVersion =>
        FrontMatter.TryGetValue("online version", out var v) && !string.IsNullOrWhiteSpace(v) ? v : null;

    public ParameterDoc? GetParameter(string name) =>
        Parameters.FirstOrDefault(p => string.Equals(p.Name, name.TrimStart('-'), StringComparison.OrdinalIgnoreCase));

    public override string ToString() => Name;
}

/// <summary>One <c>### SetName</c> block of the SYNTAX section.</summary>
public sealed record SyntaxDoc(string ParameterSetName, bool IsDefault, string SyntaxLine, IReadOnlyList<string> ParameterNames, int Line);

/// <summary>One <c>### -Name</c> block of the PARAMETERS section.</summary>
public sealed class ParameterDoc
{
    /// <summary>The name without the leading dash.</summary>
    public required string Name { get; init; }
    /// <summary>Description paragraphs.</summary>
    public required IReadOnlyList<string> Description { get; init; }
    public required string Type { get; init; }
    public required IReadOnlyList<string> Aliases { get; init; }
    /// <summary>One entry per yaml block; PlatyPS writes several when the attributes differ between sets.</summary>
    public required IReadOnlyList<ParameterAttributes> Attributes { get; init; }
    public int Line { get; init; }

    /// <summary>True when the yaml says <c>Parameter Sets: (All)</c>.</summary>
    public bool InAllParameterSets => Attributes.Any(a => a.InAllParameterSets);
    /// <summary>The set names as written, "(All)" included, over all yaml blocks.</summary>
    public IReadOnlyList<string> ParameterSets => Attributes.SelectMany(a => a.ParameterSets).Distinct(StringComparer.OrdinalIgnoreCase).ToList();
    public bool Required => Attributes[0].Required;
    /// <summary>Null for "Named".</summary>
    public int? Position => Attributes[0].Position;
    public string DefaultValue => Attributes[0].DefaultValue;
    public PipelineInput PipelineInput => Attributes[0].PipelineInput;
    public bool AcceptsWildcards => Attributes[0].AcceptsWildcards;
    public IReadOnlyList<string> AcceptedValues => Attributes[0].AcceptedValues;
    public bool IsSwitch => Type is "SwitchParameter" or "System.Management.Automation.SwitchParameter";

    public bool BelongsTo(string parameterSetName) => For(parameterSetName) is not null;

    /// <summary>The attributes that apply in the given set, or null when the parameter is not in it.</summary>
    public ParameterAttributes? For(string parameterSetName) =>
        Attributes.FirstOrDefault(a => a.ParameterSets.Contains(parameterSetName, StringComparer.OrdinalIgnoreCase))
        ?? Attributes.FirstOrDefault(a => a.InAllParameterSets);

    public override string ToString() => "-" + Name;
}

/// <summary>The attributes from one yaml block of a parameter.</summary>
public sealed record ParameterAttributes(
    IReadOnlyList<string> ParameterSets,
    bool Required,
    int? Position,
    string DefaultValue,
    PipelineInput PipelineInput,
    bool AcceptsWildcards,
    IReadOnlyList<string> AcceptedValues)
{
    public const string AllSets = "(All)";
    public bool InAllParameterSets => ParameterSets.Contains(AllSets, StringComparer.OrdinalIgnoreCase);

    /// <summary>The text MAML and PlatyPS use: "False", "True (ByValue)", "True (ByPropertyName, ByValue)".</summary>
    public string PipelineInputText => PipelineInput switch
    {
        PipelineInput.None => "False",
        PipelineInput.ByValue => "True (ByValue)",
        PipelineInput.ByPropertyName => "True (ByPropertyName)",
        _ => "True (ByPropertyName, ByValue)",
    };

    /// <summary>"named" or the position number, as MAML writes it.</summary>
    public string PositionText => Position?.ToString(CultureInfo.InvariantCulture) ?? "named";
}

[Flags]
public enum PipelineInput
{
    None = 0,
    ByValue = 1,
    ByPropertyName = 2,
}

/// <summary>One <c>### Example N: …</c> block: title, code, and the paragraphs after the code.</summary>
public sealed record ExampleDoc(string Title, string Code, IReadOnlyList<string> Remarks);

/// <summary>One <c>### TypeName</c> of INPUTS or OUTPUTS.</summary>
public sealed record TypeDoc(string Name, IReadOnlyList<string> Description);

/// <summary>One related link; <see cref="Uri"/> is null for links to other pages of these docs.</summary>
public sealed record LinkDoc(string Text, string? Uri);

/// <summary>A doc that does not follow the layout; the message reads "file:line: problem".</summary>
public sealed class DocFormatException(string file, int line, string problem)
    : Exception($"{file}:{line}: {problem}")
{
    public string File { get; } = file;
    /// <summary>1-based line number.</summary>
    public int Line { get; } = line;
    public string Problem { get; } = problem;
}

/// <summary>What <see cref="CmdletDocParser.ParseDirectory"/> found in a folder.</summary>
public sealed record DocSet(
    IReadOnlyList<CmdletDoc> Cmdlets,
    IReadOnlyList<string> ModulePages,
    IReadOnlyList<DocFormatException> Errors);

using System.Collections;
using System.Management.Automation;
using System.Management.Automation.Language;
using System.Management.Automation.Runspaces;
using System.Text.RegularExpressions;
using QubesFirewall.HelpBuilder;

namespace QubesFirewall.PowerShell.Tests;

/// <summary>
/// The cmdlets as PowerShell sees them: every cmdlet class of the QubesFirewall.PowerShell
/// assembly, registered in a runspace, so <see cref="CmdletInfo"/> gives the merged metadata
/// PowerShell binds with (parameter sets, WhatIf/Confirm, aliases, positions, pipeline input).
/// </summary>
public sealed class CmdletMetadataFixture : IDisposable
{
    private readonly Runspace _runspace;

    public CmdletMetadataFixture()
    {
        var iss = InitialSessionState.CreateDefault2();
        foreach (var (name, type) in CmdletDocsTests.CmdletTypes())
            iss.Commands.Add(new SessionStateCmdletEntry(name, type, helpFileName: null));
        _runspace = RunspaceFactory.CreateRunspace(iss);
        _runspace.Open();
        using var ps = System.Management.Automation.PowerShell.Create(_runspace);
        ps.AddCommand("Get-Command").AddParameter("Name", CmdletDocsTests.CmdletTypes().Select(c => c.Name).ToArray());
        Cmdlets = ps.Invoke<CmdletInfo>().ToDictionary(c => c.Name, StringComparer.Ordinal);
    }

    public IReadOnlyDictionary<string, CmdletInfo> Cmdlets { get; }

    public void Dispose() => _runspace.Dispose();
}

/// <summary>
/// docs/cmdlets against the cmdlets: every cmdlet has a page, every page names a cmdlet, and each
/// page's parameters, parameter sets, types, aliases, Required, Position, pipeline input and
/// wildcard support equal the cmdlet's, so the help cannot drift from the code. Failures list
/// every difference, each naming the cmdlet, the parameter and what the page and the code say.
/// </summary>
public sealed class CmdletDocsTests(CmdletMetadataFixture metadata) : IClassFixture<CmdletMetadataFixture>
{
    private const string AllSets = ParameterAttributes.AllSets;

    private static readonly Lazy<DocSet> Docs = new(() => CmdletDocParser.ParseDirectory(DocsDirectory));

    private static string DocsDirectory => Path.Combine(Repo.Root, "docs", "cmdlets");

    /// <summary>Cmdlet name → class, from the [Cmdlet] attributes of the QubesFirewall.PowerShell assembly.</summary>
    public static IReadOnlyList<(string Name, Type Type)> CmdletTypes() =>
        typeof(QubeCmdlet).Assembly.GetTypes()
            .Where(t => t is { IsClass: true, IsAbstract: false } && typeof(Cmdlet).IsAssignableFrom(t))
            .Select(t => (Attribute: t.GetCustomAttributes(typeof(CmdletAttribute), inherit: false).OfType<CmdletAttribute>().SingleOrDefault(), Type: t))
            .Where(x => x.Attribute is not null)
            .Select(x => ($"{x.Attribute!.VerbName}-{x.Attribute.NounName}", x.Type))
            .OrderBy(x => x.Item1, StringComparer.Ordinal)
            .ToList();

    public static TheoryData<string> CmdletNames()
    {
        var data = new TheoryData<string>();
        foreach (var (name, _) in CmdletTypes()) data.Add(name);
        return data;
    }

    [Fact]
    public void The_assembly_has_cmdlets_to_check() =>
        Assert.True(CmdletTypes().Count >= 5, "expected the QubesFirewall cmdlets, found: " + string.Join(", ", CmdletTypes().Select(c => c.Name)));

    [Fact]
    public void Every_page_is_well_formed() =>
        Assert.True(Docs.Value.Errors.Count == 0,
            "docs/cmdlets has malformed pages:" + Environment.NewLine + string.Join(Environment.NewLine, Docs.Value.Errors.Select(e => e.Message)));

    [Fact]
    public void Every_page_names_a_cmdlet_of_the_module()
    {
        var cmdlets = CmdletTypes().Select(c => c.Name).ToHashSet(StringComparer.Ordinal);
        var strays = Docs.Value.Cmdlets.Where(d => !cmdlets.Contains(d.Name))
            .Select(d => $"{Path.GetFileName(d.SourcePath)} documents '{d.Name}', which is not a cmdlet of QubesFirewall.PowerShell (cmdlets: {string.Join(", ", cmdlets)})")
            .ToList();
        Assert.True(strays.Count == 0, string.Join(Environment.NewLine, strays));
    }

    [Fact]
    public void Every_exported_cmdlet_of_the_manifest_has_a_page()
    {
        var exported = ManifestCmdletsToExport();
        Assert.NotEmpty(exported);
        var documented = Docs.Value.Cmdlets.Select(d => d.Name).ToHashSet(StringComparer.Ordinal);
        var missing = exported.Where(n => !documented.Contains(n))
            .Select(n => $"QubesFirewall.psd1 exports {n}, but docs/cmdlets/{n}.md is missing (or malformed)")
            .ToList();
        Assert.True(missing.Count == 0, string.Join(Environment.NewLine, missing));
    }

    [Fact]
    public void The_module_page_lists_every_cmdlet_with_its_synopsis()
    {
        var modulePage = Docs.Value.ModulePages.SingleOrDefault()
            ?? throw new Xunit.Sdk.XunitException("docs/cmdlets needs exactly one module page (QubesFirewall.md); found: " + string.Join(", ", Docs.Value.ModulePages.Select(Path.GetFileName)));
        var entries = ModulePageEntries(File.ReadAllLines(modulePage));
        var problems = new List<string>();
        foreach (var doc in Docs.Value.Cmdlets)
        {
            if (!entries.TryGetValue(doc.Name, out var line))
                problems.Add($"{Path.GetFileName(modulePage)} does not list {doc.Name} ('### [{doc.Name}]({doc.Name}.md)' followed by its synopsis)");
            else if (line != doc.Synopsis)
                problems.Add($"{Path.GetFileName(modulePage)} describes {doc.Name} as '{line}', but its page's SYNOPSIS says '{doc.Synopsis}'");
        }
        foreach (var name in entries.Keys.Where(n => Docs.Value.Cmdlets.All(d => d.Name != n)))
            problems.Add($"{Path.GetFileName(modulePage)} lists {name}, which has no page");
        Assert.True(problems.Count == 0, string.Join(Environment.NewLine, problems));
    }

    [Theory]
    [MemberData(nameof(CmdletNames))]
    public void The_page_matches_the_cmdlet(string name)
    {
        var doc = Docs.Value.Cmdlets.SingleOrDefault(d => d.Name == name);
        Assert.True(doc is not null, $"docs/cmdlets/{name}.md is missing" + (Docs.Value.Errors.Count == 0 ? "" : " or malformed: " + string.Join("; ", Docs.Value.Errors.Select(e => e.Message))));
        var differences = Compare(metadata.Cmdlets[name], doc!);
        Assert.True(differences.Count == 0,
            $"docs/cmdlets/{name}.md does not match the cmdlet ({differences.Count} difference(s)):" + Environment.NewLine +
            string.Join(Environment.NewLine, differences.Select(d => "  " + d)));
    }

    [Theory]
    [MemberData(nameof(CmdletNames))]
    public void The_page_has_examples_with_code_and_explanation(string name)
    {
        var doc = Docs.Value.Cmdlets.SingleOrDefault(d => d.Name == name);
        Assert.True(doc is not null, $"docs/cmdlets/{name}.md is missing or malformed");
        Assert.True(doc!.Examples.Count >= 2, $"{name}: {doc.Examples.Count} example(s); write at least two");
        var bare = doc.Examples.Where(e => e.Remarks.Count == 0).Select(e => $"'{e.Title}'").ToList();
        Assert.True(bare.Count == 0, $"{name}: examples without an explanation after the code: {string.Join(", ", bare)}");
    }

    /// <summary>Every difference between the cmdlet's metadata and its page, as readable sentences.</summary>
    internal static List<string> Compare(CmdletInfo cmdlet, CmdletDoc doc)
    {
        var d = new List<string>();
        var name = cmdlet.Name;

        // Parameter sets: the SYNTAX headings.
        var sets = cmdlet.ParameterSets.ToList();
        var setNames = sets.Select(s => s.Name).ToList();
        var docSetNames = doc.Syntax.Select(s => s.ParameterSetName).ToList();
        foreach (var missing in setNames.Where(s => !docSetNames.Contains(s, StringComparer.Ordinal)))
            d.Add($"{name}: parameter set '{missing}' has no '### {missing}' block in ## SYNTAX (the page has: {List(docSetNames)})");
        foreach (var extra in docSetNames.Where(s => !setNames.Contains(s, StringComparer.Ordinal)))
            d.Add($"{name}: ## SYNTAX has a block '### {extra}', but the cmdlet has no such parameter set (it has: {List(setNames)})");
        var expectedDefault = sets.Count > 1 && setNames.Contains(cmdlet.DefaultParameterSet, StringComparer.Ordinal) ? cmdlet.DefaultParameterSet : null;
        if (!string.Equals(expectedDefault, doc.DefaultParameterSet, StringComparison.Ordinal))
            d.Add(expectedDefault is null
                ? $"{name}: ## SYNTAX marks '{doc.DefaultParameterSet}' as (Default), but the cmdlet has {(sets.Count > 1 ? "no default parameter set" : "a single parameter set")}"
                : $"{name}: the default parameter set is '{expectedDefault}'; write '### {expectedDefault} (Default)' in ## SYNTAX" +
                  (doc.DefaultParameterSet is null ? "" : $" (the page marks '{doc.DefaultParameterSet}')"));

        // Parameters: documented once each, WhatIf and Confirm included, the common parameters not.
        var parameters = cmdlet.Parameters.Values.Where(p => !Cmdlet.CommonParameters.Contains(p.Name)).ToList();
        foreach (var p in parameters.Where(p => doc.GetParameter(p.Name) is null))
            d.Add($"{name} -{p.Name}: not documented in ## PARAMETERS");
        foreach (var p in doc.Parameters.Where(p => parameters.All(x => !string.Equals(x.Name, p.Name, StringComparison.OrdinalIgnoreCase))))
            d.Add($"{name} -{p.Name}: documented in ## PARAMETERS, but the cmdlet has no such parameter");
        foreach (var p in doc.Parameters.Where(p => parameters.Any(x => x.Name != p.Name && string.Equals(x.Name, p.Name, StringComparison.OrdinalIgnoreCase))))
            d.Add($"{name} -{p.Name}: the parameter is spelled -{parameters.First(x => string.Equals(x.Name, p.Name, StringComparison.OrdinalIgnoreCase)).Name}");

        foreach (var p in parameters)
        {
            if (doc.GetParameter(p.Name) is not { } pd) continue;
            var label = $"{name} -{p.Name}";

            var type = PlatyPsTypeName(p.ParameterType);
            if (pd.Type != type)
                d.Add($"{label}: Type: the page says '{pd.Type}', the parameter is {p.ParameterType} (PlatyPS writes '{type}')");

            var aliases = p.Aliases.Order(StringComparer.OrdinalIgnoreCase).ToList();
            if (!pd.Aliases.Order(StringComparer.OrdinalIgnoreCase).SequenceEqual(aliases, StringComparer.Ordinal))
                d.Add($"{label}: Aliases: the page says {List(pd.Aliases)}, the parameter has {List(aliases)}");

            var accepted = AcceptedValues(p);
            var docAccepted = pd.Attributes.SelectMany(a => a.AcceptedValues).Distinct(StringComparer.Ordinal).ToList();
            if (!docAccepted.Order(StringComparer.Ordinal).SequenceEqual(accepted.Order(StringComparer.Ordinal), StringComparer.Ordinal))
                d.Add($"{label}: Accepted values: the page says {List(docAccepted)}, the parameter takes {List(accepted)}");

            var wildcards = p.Attributes.OfType<SupportsWildcardsAttribute>().Any();
            foreach (var a in pd.Attributes.Where(a => a.AcceptsWildcards != wildcards))
                d.Add($"{label}: Accept wildcard characters: the page says {a.AcceptsWildcards} (sets {List(a.ParameterSets)}), the parameter {(wildcards ? "has" : "has no")} [SupportsWildcards]");

            // The sets the parameter is in, and its attributes in each.
            var inSets = sets.Select(s => (Set: s, Info: s.Parameters.FirstOrDefault(x => x.Name == p.Name))).Where(x => x.Info is not null).ToList();
            var actualSetNames = inSets.Select(x => x.Set.Name).ToList();
            // "(All)" means every set the cmdlet has (a wrong set name is reported once, above).
            var docSets = pd.ParameterSets.SelectMany(s => s == AllSets ? setNames : [s]).Distinct(StringComparer.Ordinal).ToList();
            if (!docSets.Order(StringComparer.Ordinal).SequenceEqual(actualSetNames.Order(StringComparer.Ordinal), StringComparer.Ordinal))
                d.Add($"{label}: Parameter Sets: the page says {List(pd.ParameterSets)}, the parameter is in {List(actualSetNames)}" +
                      (actualSetNames.Count == sets.Count ? " (write '(All)')" : ""));
            else if (actualSetNames.Count == sets.Count && pd.Attributes.Count == 1 && !pd.InAllParameterSets)
                d.Add($"{label}: Parameter Sets: the parameter is in every set; write '(All)' as PlatyPS does, not {List(pd.ParameterSets)}");

            foreach (var (set, info) in inSets)
            {
                if (pd.For(set.Name) is not { } a) continue; // reported above
                var where = sets.Count > 1 ? $" in set '{set.Name}'" : "";
                if (a.Required != info!.IsMandatory)
                    d.Add($"{label}: Required: the page says {a.Required}{where}, the parameter is {(info.IsMandatory ? "mandatory" : "optional")}");
                int? position = info.Position == int.MinValue ? null : info.Position;
                if (a.Position != position)
                    d.Add($"{label}: Position: the page says {a.Position?.ToString() ?? "Named"}{where}, the parameter has {position?.ToString() ?? "no position (Named)"}");
                var pipeline = (info.ValueFromPipeline ? PipelineInput.ByValue : PipelineInput.None) |
                               (info.ValueFromPipelineByPropertyName ? PipelineInput.ByPropertyName : PipelineInput.None);
                if (a.PipelineInput != pipeline)
                    d.Add($"{label}: Accept pipeline input: the page says {a.PipelineInputText}{where}, the parameter says {(a with { PipelineInput = pipeline }).PipelineInputText}");
            }
        }

        // The syntax lines: the parameters of each set, in Get-Command -Syntax order, written as PlatyPS writes them.
        foreach (var set in sets)
        {
            var syntax = doc.Syntax.FirstOrDefault(s => s.ParameterSetName == set.Name);
            if (syntax is null) continue; // reported above
            var expected = SyntaxOrder(set).Where(n => !Cmdlet.CommonParameters.Contains(n)).ToList();
            if (!syntax.ParameterNames.SequenceEqual(expected, StringComparer.Ordinal))
                d.Add($"{name}: the syntax of '{set.Name}' lists {List(syntax.ParameterNames.Select(n => "-" + n))}; the set has {List(expected.Select(n => "-" + n))}, in that order");
            foreach (var info in set.Parameters.Where(x => !Cmdlet.CommonParameters.Contains(x.Name)))
            {
                var token = SyntaxToken(info);
                if (!Regex.IsMatch(syntax.SyntaxLine, @"(^|\s)" + Regex.Escape(token) + @"(\s|$)"))
                    d.Add($"{name}: the syntax of '{set.Name}' should show -{info.Name} as '{token}'");
            }
            if (!syntax.SyntaxLine.EndsWith("[<CommonParameters>]", StringComparison.Ordinal))
                d.Add($"{name}: the syntax of '{set.Name}' should end with '[<CommonParameters>]'");
        }

        // INPUTS and OUTPUTS: the types the pipeline passes by value, and the declared output types.
        var inputs = doc.Inputs.Select(t => t.Name).ToList();
        foreach (var type in parameters.Where(p => p.ParameterSets.Values.Any(s => s.ValueFromPipeline)).Select(p => p.ParameterType.FullName!).Distinct())
            if (!inputs.Contains(type, StringComparer.Ordinal))
                d.Add($"{name}: ## INPUTS does not list {type}, which binds from the pipeline by value (it lists {List(inputs)})");
        var outputs = doc.Outputs.Select(t => t.Name).ToList();
        foreach (var type in cmdlet.OutputType.Select(t => t.Name).Distinct())
            if (!outputs.Contains(type, StringComparer.Ordinal))
                d.Add($"{name}: ## OUTPUTS does not list {type}, the cmdlet's [OutputType] (it lists {List(outputs)})");
        return d;
    }

    /// <summary>The type name PlatyPS writes: the short name, a nullable's underlying type, a generic type in full.</summary>
    internal static string PlatyPsTypeName(Type type) =>
        Nullable.GetUnderlyingType(type) is { } inner ? inner.Name
        : type.IsGenericType ? type.ToString()
        : type.Name;

    /// <summary>How PlatyPS shows a parameter in a syntax line.</summary>
    internal static string SyntaxToken(CommandParameterInfo info)
    {
        if (info.ParameterType == typeof(SwitchParameter)) return $"[-{info.Name}]";
        var namepart = info.Position == int.MinValue ? $"-{info.Name}" : $"[-{info.Name}]";
        var token = $"{namepart} <{PlatyPsTypeName(info.ParameterType)}>";
        return info.IsMandatory ? token : $"[{token}]";
    }

    /// <summary>The parameter names of a set in the order Get-Command -Syntax shows them.</summary>
    private static IEnumerable<string> SyntaxOrder(CommandParameterSetInfo set) =>
        Regex.Matches(set.ToString(), @"(?<=[\s\[]|^)-([A-Za-z_][A-Za-z0-9_]*)").Select(m => m.Groups[1].Value).Distinct(StringComparer.Ordinal);

    /// <summary>The values a parameter accepts: an enum's names (nullable and arrays too) or a [ValidateSet].</summary>
    private static List<string> AcceptedValues(ParameterMetadata p)
    {
        var validateSet = p.Attributes.OfType<ValidateSetAttribute>().FirstOrDefault();
        if (validateSet is not null) return validateSet.ValidValues.ToList();
        var type = p.ParameterType.IsArray ? p.ParameterType.GetElementType()! : p.ParameterType;
        type = Nullable.GetUnderlyingType(type) ?? type;
        return type.IsEnum ? Enum.GetNames(type).ToList() : [];
    }

    /// <summary>CmdletsToExport of the manifest source, QubesFirewall.psd1, read as data (nothing runs).</summary>
    private static List<string> ManifestCmdletsToExport()
    {
        var path = Path.Combine(Repo.Root, "QubesFirewall.psd1");
        var ast = Parser.ParseFile(path, out _, out var errors);
        Assert.True(errors.Length == 0, $"{path} does not parse: {string.Join("; ", errors.Select(e => e.Message))}");
        var table = (Hashtable)ast.Find(a => a is HashtableAst, searchNestedScriptBlocks: false)!.SafeGetValue();
        return table["CmdletsToExport"] switch
        {
            string one => [one],
            object[] many => many.Select(o => (string)o).ToList(),
            _ => [],
        };
    }

    /// <summary>The module page's "### [Name](Name.md)" headings and the line under each.</summary>
    private static Dictionary<string, string> ModulePageEntries(string[] lines)
    {
        var result = new Dictionary<string, string>(StringComparer.Ordinal);
        for (var i = 0; i < lines.Length; i++)
        {
            var m = Regex.Match(lines[i], @"^### \[([^\]]+)\]\(([^)]+)\)\s*$");
            if (!m.Success) continue;
            var text = new List<string>();
            for (var j = i + 1; j < lines.Length && !lines[j].StartsWith('#'); j++)
                if (lines[j].Trim().Length > 0) text.Add(lines[j].Trim());
            result[m.Groups[1].Value] = string.Join(" ", text);
        }
        return result;
    }

    private static string List(IEnumerable<string> items)
    {
        var list = items.ToList();
        return list.Count == 0 ? "none" : string.Join(", ", list.Select(i => $"'{i}'"));
    }
}

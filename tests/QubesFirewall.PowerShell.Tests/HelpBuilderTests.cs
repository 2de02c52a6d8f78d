using System.Xml;
using System.Xml.Linq;
using System.Xml.XPath;
using QubesFirewall.HelpBuilder;

namespace QubesFirewall.PowerShell.Tests;

/// <summary>The help converter: PlatyPS-layout markdown → model → MAML.</summary>
public sealed class HelpBuilderTests : IDisposable
{
    const string SampleFile = "Get-Thing.md";

    internal const string Sample = """
        ---
        external help file: ThingModule.dll-Help.xml
        Module Name: ThingModule
        online version: https://example.org/get-thing
        schema: 2.0.0
        ---

        # Get-Thing

        ## SYNOPSIS
        Gets things by name or by id.

        ## SYNTAX

        ### ByName (Default)
        ```
        Get-Thing [-Name] <String[]> [-Force] [<CommonParameters>]
        ```

        ### ById
        ```
        Get-Thing -Id <Int32> [-Force] [<CommonParameters>]
        ```

        ## DESCRIPTION
        The `Get-Thing` cmdlet gets things
        by **name** or by id.

        A second paragraph.

        ## EXAMPLES

        ### Example 1: Get a thing by name
        ```powershell
        Get-Thing -Name foo
        ```

        This example gets foo.

        ### Example 2: Get a thing by id
        ```powershell
        Get-Thing -Id 42
        ```

        ```Output
        thing 42
        ```

        This example gets thing 42.

        ## PARAMETERS

        ### -Name
        The names of the things.

        ```yaml
        Type: String[]
        Parameter Sets: ByName
        Aliases: ThingName, N

        Required: True
        Position: 0
        Default value: None
        Accept pipeline input: True (ByPropertyName, ByValue)
        Accept wildcard characters: True
        ```

        ### -Id
        The id of the thing.

        ```yaml
        Type: Int32
        Parameter Sets: ById
        Aliases:

        Required: True
        Position: Named
        Default value: None
        Accept pipeline input: False
        Accept wildcard characters: False
        ```

        ### -Force
        Gets hidden things too.

        ```yaml
        Type: SwitchParameter
        Parameter Sets: (All)
        Aliases:

        Required: False
        Position: Named
        Default value: False
        Accept pipeline input: False
        Accept wildcard characters: False
        ```

        ### CommonParameters
        This cmdlet supports the common parameters. For more information, see
        [about_CommonParameters](http://go.microsoft.com/fwlink/?LinkID=113216).

        ## INPUTS

        ### System.String[]
        Thing names.

        ## OUTPUTS

        ### System.String
        One line per thing.

        ## NOTES
        Things are imaginary.

        ## RELATED LINKS

        [Get-Qube](Get-Qube.md)

        [Thing home](https://example.org/thing)
        """;

    const string ModulePage = """
        ---
        Module Name: ThingModule
        Module Guid: 11111111-2222-3333-4444-555555555555
        Help Version: 0.1.0
        Locale: en-US
        ---

        # ThingModule Module
        ## Description
        Things.

        ## ThingModule Cmdlets
        ### [Get-Thing](Get-Thing.md)
        Gets things.
        """;

    static readonly XmlNamespaceManager Ns = CreateNamespaces();

    readonly string temp = Directory.CreateTempSubdirectory("helpbuilder-").FullName;

    public void Dispose() => Directory.Delete(temp, recursive: true);

    static XmlNamespaceManager CreateNamespaces()
    {
        var ns = new XmlNamespaceManager(new NameTable());
        ns.AddNamespace("msh", "http://msh");
        ns.AddNamespace("maml", "http://schemas.microsoft.com/maml/2004/10");
        ns.AddNamespace("command", "http://schemas.microsoft.com/maml/dev/command/2004/10");
        ns.AddNamespace("dev", "http://schemas.microsoft.com/maml/dev/2004/10");
        return ns;
    }

    static CmdletDoc ParseSample(string text = Sample) => CmdletDocParser.Parse(text, SampleFile)!;

    static int LineOf(string text, string line) =>
        Array.FindIndex(text.Split('\n'), l => l.TrimEnd('\r') == line) + 1;

    static string Value(XNode node, string xpath) =>
        string.Join("|", ((IEnumerable<object>)node.XPathEvaluate(xpath, Ns)).Select(o => o switch
        {
            XElement e => e.Value,
            XAttribute a => a.Value,
            _ => o.ToString(),
        }));

    [Fact]
    public void Parse_ReadsNameSynopsisAndDescription()
    {
        var doc = ParseSample();

        Assert.Equal("Get-Thing", doc.Name);
        Assert.Equal("Get", doc.Verb);
        Assert.Equal("Thing", doc.Noun);
        Assert.Equal("Gets things by name or by id.", doc.Synopsis);
        Assert.Equal(["The Get-Thing cmdlet gets things by name or by id.", "A second paragraph."], doc.Description);
        Assert.Equal("https://example.org/get-thing", doc.OnlineVersion);
        Assert.Equal("ThingModule", doc.FrontMatter["Module Name"]);
    }

    [Fact]
    public void Parse_ReadsParameterSetsInSyntaxOrder()
    {
        var doc = ParseSample();

        Assert.Equal(["ByName", "ById"], doc.ParameterSets.Keys);
        Assert.Equal(["Name", "Force"], doc.ParameterSets["ByName"]);
        Assert.Equal(["Id", "Force"], doc.ParameterSets["ById"]);
        Assert.Equal("ByName", doc.DefaultParameterSet);
        Assert.Equal("Get-Thing -Id <Int32> [-Force] [<CommonParameters>]", doc.Syntax[1].SyntaxLine);
    }

    [Fact]
    public void Parse_ReadsParameterYaml()
    {
        var doc = ParseSample();

        Assert.Equal(["Name", "Id", "Force"], doc.Parameters.Select(p => p.Name));

        var name = doc.GetParameter("-Name")!;
        Assert.Equal("String[]", name.Type);
        Assert.Equal(["The names of the things."], name.Description);
        Assert.Equal(["ByName"], name.ParameterSets);
        Assert.Equal(["ThingName", "N"], name.Aliases);
        Assert.True(name.Required);
        Assert.Equal(0, name.Position);
        Assert.Equal(PipelineInput.ByValue | PipelineInput.ByPropertyName, name.PipelineInput);
        Assert.True(name.AcceptsWildcards);
        Assert.Equal("None", name.DefaultValue);
        Assert.False(name.IsSwitch);

        var id = doc.GetParameter("Id")!;
        Assert.Equal("Int32", id.Type);
        Assert.Empty(id.Aliases);
        Assert.Null(id.Position);
        Assert.Equal(PipelineInput.None, id.PipelineInput);
        Assert.True(id.BelongsTo("ById"));
        Assert.False(id.BelongsTo("ByName"));

        var force = doc.GetParameter("Force")!;
        Assert.True(force.IsSwitch);
        Assert.True(force.InAllParameterSets);
        Assert.True(force.BelongsTo("ByName") && force.BelongsTo("ById"));
        Assert.False(force.Required);
        Assert.Null(doc.GetParameter("CommonParameters"));
    }

    [Fact]
    public void Parse_ReadsExamplesInputsOutputsNotesAndLinks()
    {
        var doc = ParseSample();

        Assert.Equal(2, doc.Examples.Count);
        Assert.Equal("Example 1: Get a thing by name", doc.Examples[0].Title);
        Assert.Equal("Get-Thing -Name foo", doc.Examples[0].Code);
        Assert.Equal(["This example gets foo."], doc.Examples[0].Remarks);
        // An ```Output block is not part of the command: it goes with the remarks.
        Assert.Equal("Get-Thing -Id 42", doc.Examples[1].Code);
        Assert.Equal(["thing 42", "This example gets thing 42."], doc.Examples[1].Remarks);

        Assert.Equal(new TypeDoc("System.String[]", ["Thing names."]), doc.Inputs.Single(), TypeDocComparer.Instance);
        Assert.Equal("System.String", doc.Outputs.Single().Name);
        Assert.Equal(["Things are imaginary."], doc.Notes);
        Assert.Equal([new LinkDoc("Get-Qube", null), new LinkDoc("Thing home", "https://example.org/thing")], doc.RelatedLinks);
    }

    [Fact]
    public void Parse_ParameterWithOneYamlBlockPerSet_KeepsEachSetsAttributes()
    {
        const string forceYaml = "Type: SwitchParameter\nParameter Sets: (All)\nAliases:\n\nRequired: False\nPosition: Named\n";
        Assert.Contains(forceYaml, Sample);
        var text = Sample
            .Replace(forceYaml,
                "Type: SwitchParameter\nParameter Sets: ByName\nAliases:\n\nRequired: False\nPosition: Named\n" +
                "Default value: False\nAccept pipeline input: False\nAccept wildcard characters: False\n```\n\n```yaml\n" +
                "Type: SwitchParameter\nParameter Sets: ById\nAliases:\n\nRequired: True\nPosition: 1\n")
            .Replace("Get-Thing -Id <Int32> [-Force]", "Get-Thing -Id <Int32> -Force");

        var doc = ParseSample(text);
        var force = doc.GetParameter("Force")!;

        Assert.Equal(["ByName", "ById"], force.ParameterSets);
        Assert.False(force.InAllParameterSets);
        Assert.False(force.For("ByName")!.Required);
        Assert.True(force.For("ById")!.Required);
        Assert.Equal(1, force.For("ById")!.Position);

        var maml = MamlWriter.ToMaml([doc]);
        var byId = "//command:syntax/command:syntaxItem[2]/command:parameter[maml:name='Force']";
        Assert.Equal("true", Value(maml, byId + "/@required"));
        Assert.Equal("1", Value(maml, byId + "/@position"));
        Assert.Equal("false", Value(maml, "//command:syntax/command:syntaxItem[1]/command:parameter[maml:name='Force']/@required"));
    }

    [Fact]
    public void Parse_SkipsTheModulePage()
    {
        Assert.Null(CmdletDocParser.Parse(ModulePage, "ThingModule.md"));
    }

    [Fact]
    public void ParseDirectory_ListsModulePagesApartFromCmdlets()
    {
        File.WriteAllText(Path.Combine(temp, "Get-Thing.md"), Sample);
        File.WriteAllText(Path.Combine(temp, "ThingModule.md"), ModulePage);

        var set = CmdletDocParser.ParseDirectory(temp);

        Assert.Empty(set.Errors);
        Assert.Equal("Get-Thing", set.Cmdlets.Single().Name);
        Assert.Equal("ThingModule.md", Path.GetFileName(set.ModulePages.Single()));
    }

    [Fact]
    public void Maml_HasDetailsAndDescription()
    {
        var cmd = MamlWriter.ToMaml([ParseSample()]).XPathSelectElement("/msh:helpItems[@schema='maml']/command:command", Ns)!;

        Assert.NotNull(cmd);
        Assert.Equal("Get-Thing", Value(cmd, "command:details/command:name"));
        Assert.Equal("Get", Value(cmd, "command:details/command:verb"));
        Assert.Equal("Thing", Value(cmd, "command:details/command:noun"));
        Assert.Equal("Gets things by name or by id.", Value(cmd, "command:details/maml:description/maml:para"));
        Assert.Equal("The Get-Thing cmdlet gets things by name or by id.|A second paragraph.", Value(cmd, "maml:description/maml:para"));
    }

    [Fact]
    public void Maml_HasOneSyntaxItemPerSetWithAttributes()
    {
        var cmd = MamlWriter.ToMaml([ParseSample()]).XPathSelectElement("//command:command", Ns)!;

        var items = cmd.XPathSelectElements("command:syntax/command:syntaxItem", Ns).ToList();
        Assert.Equal(2, items.Count);
        Assert.Equal("Get-Thing", Value(items[0], "maml:name"));
        Assert.Equal("Name|Force", Value(items[0], "command:parameter/maml:name"));
        Assert.Equal("Id|Force", Value(items[1], "command:parameter/maml:name"));

        var name = items[0].XPathSelectElement("command:parameter[maml:name='Name']", Ns)!;
        Assert.Equal("true", name.Attribute("required")!.Value);
        Assert.Equal("0", name.Attribute("position")!.Value);
        Assert.Equal("True (ByPropertyName, ByValue)", name.Attribute("pipelineInput")!.Value);
        Assert.Equal("true", name.Attribute("globbing")!.Value);
        Assert.Equal("ThingName, N", name.Attribute("aliases")!.Value);
        Assert.Equal("String[]", Value(name, "command:parameterValue"));
        Assert.Equal("true", Value(name, "command:parameterValue/@required"));

        var id = items[1].XPathSelectElement("command:parameter[maml:name='Id']", Ns)!;
        Assert.Equal("named", id.Attribute("position")!.Value);
        Assert.Equal("False", id.Attribute("pipelineInput")!.Value);
        Assert.Equal("none", id.Attribute("aliases")!.Value);
        Assert.Equal("Int32", Value(id, "command:parameterValue"));

        // A switch shows as [-Force] in the syntax: no value element there.
        Assert.Empty(items[0].XPathSelectElements("command:parameter[maml:name='Force']/command:parameterValue", Ns));
    }

    [Fact]
    public void Maml_HasParametersTypesNotesExamplesAndLinks()
    {
        var cmd = MamlWriter.ToMaml([ParseSample()]).XPathSelectElement("//command:command", Ns)!;

        Assert.Equal("Name|Id|Force", Value(cmd, "command:parameters/command:parameter/maml:name"));
        Assert.Equal("The id of the thing.", Value(cmd, "command:parameters/command:parameter[maml:name='Id']/maml:description/maml:para"));
        Assert.Equal("SwitchParameter", Value(cmd, "command:parameters/command:parameter[maml:name='Force']/dev:type/maml:name"));
        Assert.Equal("False", Value(cmd, "command:parameters/command:parameter[maml:name='Force']/dev:defaultValue"));

        Assert.Equal("System.String[]", Value(cmd, "command:inputTypes/command:inputType/dev:type/maml:name"));
        Assert.Equal("Thing names.", Value(cmd, "command:inputTypes/command:inputType/maml:description/maml:para"));
        Assert.Equal("System.String", Value(cmd, "command:returnValues/command:returnValue/dev:type/maml:name"));
        Assert.Equal("Things are imaginary.", Value(cmd, "maml:alertSet/maml:alert/maml:para"));

        var examples = cmd.XPathSelectElements("command:examples/command:example", Ns).ToList();
        Assert.Equal(2, examples.Count);
        Assert.Contains("Example 1: Get a thing by name", Value(examples[0], "maml:title"));
        Assert.Equal("Get-Thing -Name foo", Value(examples[0], "dev:code"));
        Assert.StartsWith("This example gets foo.", Value(examples[0], "dev:remarks/maml:para"));

        Assert.Equal("Online Version:|Get-Qube|Thing home", Value(cmd, "command:relatedLinks/maml:navigationLink/maml:linkText"));
        Assert.Equal("https://example.org/get-thing||https://example.org/thing", Value(cmd, "command:relatedLinks/maml:navigationLink/maml:uri"));
    }

    [Fact]
    public void Maml_UsesThePrefixesPowerShellReads()
    {
        var path = Path.Combine(temp, "Thing.dll-Help.xml");
        MamlWriter.Write([ParseSample()], path);
        var text = File.ReadAllText(path);

        // Get-Help matches qualified names, so the prefixes themselves matter.
        Assert.Contains("<helpItems schema=\"maml\" xmlns=\"http://msh\"", text);
        Assert.Contains("<command:command>", text);
        Assert.Contains("<command:details>", text);
        Assert.Contains("<maml:para>", text);
        Assert.Contains("<dev:code>", text);
        Assert.Contains("xmlns:command=\"http://schemas.microsoft.com/maml/dev/command/2004/10\"", text);
    }

    public static TheoryData<string, string, string, string> Malformed => new()
    {
        // name, text in Sample, its replacement, expected problem
        { "missing section", "## DESCRIPTION\nThe `Get-Thing` cmdlet gets things\nby **name** or by id.\n\nA second paragraph.\n", "", "missing section '## DESCRIPTION' before '## EXAMPLES'" },
        { "parameter without yaml", "The id of the thing.\n\n```yaml\nType: Int32\nParameter Sets: ById\nAliases:\n\nRequired: True\nPosition: Named\nDefault value: None\nAccept pipeline input: False\nAccept wildcard characters: False\n```\n", "The id of the thing.\n", "-Id has no ```yaml block" },
        { "yaml key missing", "Default value: False\n", "", "the yaml block of -Force has no 'Default value:'" },
        { "bad Required", "Required: False\nPosition: Named\nDefault value: False", "Required: maybe\nPosition: Named\nDefault value: False", "'Required' of -Force must be True or False, not 'maybe'" },
        { "bad pipeline input", "Accept pipeline input: True (ByPropertyName, ByValue)", "Accept pipeline input: Yes", "'Accept pipeline input' of -Name must be False" },
        { "syntax names undocumented parameter", "Get-Thing -Id <Int32> [-Force]", "Get-Thing -Id <Int32> [-Bogus] [-Force]", "uses -Bogus, which ## PARAMETERS does not document" },
        { "parameter missing from syntax", "Get-Thing -Id <Int32> [-Force]", "Get-Thing -Id <Int32>", "-Force is in parameter set 'ById' but missing from its syntax line" },
        { "unknown parameter set", "Parameter Sets: ById", "Parameter Sets: ByKey", "-Id names parameter set 'ByKey', which ## SYNTAX does not have" },
        { "NOTES missing", "## NOTES\nThings are imaginary.\n", "", "missing section '## NOTES' before '## RELATED LINKS'" },
        { "example without code", "```powershell\nGet-Thing -Name foo\n```\n", "", "example '### Example 1: Get a thing by name' has no ```powershell code block" },
        { "title does not match file", "# Get-Thing\n", "# Get-Other\n", "does not match the file name 'Get-Thing.md'" },
        { "sections out of order", "## INPUTS\n\n### System.String[]\nThing names.\n\n## OUTPUTS\n\n### System.String\nOne line per thing.\n", "## OUTPUTS\n\n### System.String\nOne line per thing.\n\n## INPUTS\n\n### System.String[]\nThing names.\n", "missing section '## INPUTS' before '## OUTPUTS'" },
        { "no synopsis", "## SYNOPSIS\nGets things by name or by id.\n", "", "missing section '## SYNOPSIS'" },
        { "empty description of parameter", "### -Id\nThe id of the thing.\n", "### -Id\n", "-Id has no description" },
    };

    [Theory]
    [MemberData(nameof(Malformed))]
    public void Parse_MalformedDoc_NamesFileLineAndProblem(string name, string find, string replace, string problem)
    {
        Assert.Contains(find, Sample);
        var text = Sample.Replace(find, replace);
        var path = Path.Combine(temp, SampleFile);

        var e = Assert.Throws<DocFormatException>(() => CmdletDocParser.Parse(text, path));

        Assert.True(e.Problem.Contains(problem, StringComparison.Ordinal), $"{name}: got '{e.Problem}'");
        Assert.Equal(path, e.File);
        Assert.InRange(e.Line, 1, text.Split('\n').Length);
        Assert.StartsWith($"{path}:{e.Line}: ", e.Message);
    }

    [Fact]
    public void Parse_MalformedDoc_PointsAtTheOffendingLine()
    {
        var text = Sample.Replace("Required: False\nPosition: Named\nDefault value: False", "Required: maybe\nPosition: Named\nDefault value: False");

        var e = Assert.Throws<DocFormatException>(() => CmdletDocParser.Parse(text, SampleFile));

        Assert.Equal(LineOf(text, "Required: maybe"), e.Line);

        var noYaml = Sample.Replace("### -Id\nThe id of the thing.\n\n```yaml\n", "### -Id\nThe id of the thing.\n\n```\n");
        e = Assert.Throws<DocFormatException>(() => CmdletDocParser.Parse(noYaml, SampleFile));
        Assert.Equal(LineOf(noYaml, "### -Id"), e.Line);
    }

    [Fact]
    public void Cli_WritesMamlAndAboutTopics()
    {
        var docs = Directory.CreateDirectory(Path.Combine(temp, "docs")).FullName;
        Directory.CreateDirectory(Path.Combine(docs, "cmdlets"));
        Directory.CreateDirectory(Path.Combine(docs, "about"));
        File.WriteAllText(Path.Combine(docs, "cmdlets", "Get-Thing.md"), Sample);
        File.WriteAllText(Path.Combine(docs, "cmdlets", "ThingModule.md"), ModulePage);
        File.WriteAllText(Path.Combine(docs, "about", "about_Thing.md"), "# about_Thing\n\n## Short description\nExplains `things`.\n");
        var outDir = Path.Combine(temp, "out", "en-US");
        var (stdout, stderr) = (new StringWriter(), new StringWriter());

        var rc = Program.Run([docs, outDir], stdout, stderr);

        Assert.True(rc == 0, stderr.ToString());
        var maml = XDocument.Load(Path.Combine(outDir, "QubesFirewall.PowerShell.dll-Help.xml"));
        Assert.Equal("Get-Thing", Value(maml, "//command:command/command:details/command:name"));
        var about = File.ReadAllText(Path.Combine(outDir, "about_Thing.help.txt"));
        Assert.Equal("TOPIC\n    about_Thing\n\nSHORT DESCRIPTION\n    Explains things.\n", about);
    }

    [Fact]
    public void Cli_AlsoTakesTheCmdletsAndAboutFoldersApart()
    {
        var cmdlets = Directory.CreateDirectory(Path.Combine(temp, "pages")).FullName;
        var about = Directory.CreateDirectory(Path.Combine(temp, "topics")).FullName;
        File.WriteAllText(Path.Combine(cmdlets, "Get-Thing.md"), Sample);
        File.WriteAllText(Path.Combine(about, "about_Thing.md"), "# about_Thing\n");
        var outDir = Path.Combine(temp, "out");
        var (stdout, stderr) = (new StringWriter(), new StringWriter());

        var rc = Program.Run([cmdlets, outDir, about, "--assembly", "Thing"], stdout, stderr);

        Assert.True(rc == 0, stderr.ToString());
        Assert.True(File.Exists(Path.Combine(outDir, "Thing.dll-Help.xml")));
        Assert.True(File.Exists(Path.Combine(outDir, "about_Thing.help.txt")));
    }

    [Fact]
    public void Cli_MalformedDoc_ExitsNonZeroWithFileAndLine()
    {
        var cmdlets = Directory.CreateDirectory(Path.Combine(temp, "docs", "cmdlets")).FullName;
        var path = Path.Combine(cmdlets, SampleFile);
        File.WriteAllText(path, Sample.Replace("Type: Int32\n", ""));
        var outDir = Path.Combine(temp, "out");
        var (stdout, stderr) = (new StringWriter(), new StringWriter());

        var rc = Program.Run([Path.Combine(temp, "docs"), outDir], stdout, stderr);

        Assert.Equal(1, rc);
        Assert.Contains($"{path}:", stderr.ToString());
        Assert.Contains("the yaml block of -Id has no 'Type:'", stderr.ToString());
        Assert.False(File.Exists(Path.Combine(outDir, "QubesFirewall.PowerShell.dll-Help.xml")));
    }

    [Fact]
    public void Cli_WithoutArguments_PrintsUsage()
    {
        var (stdout, stderr) = (new StringWriter(), new StringWriter());

        Assert.Equal(2, Program.Run([], stdout, stderr));
        Assert.Contains("usage: HelpBuilder <docsDir> <outDir>", stderr.ToString());
    }

    [Fact]
    public void RepositoryDocs_AreWellFormed()
    {
        var root = AppContext.BaseDirectory;
        while (!File.Exists(Path.Combine(root, "QubesFirewall.slnx")))
            root = Path.GetDirectoryName(root) ?? throw new InvalidOperationException("repository root not found");

        var set = CmdletDocParser.ParseDirectory(Path.Combine(root, "docs", "cmdlets"));

        Assert.Empty(set.Errors.Select(e => e.Message));
        Assert.Contains(set.ModulePages, p => Path.GetFileName(p) == "QubesFirewall.md");
    }

    sealed class TypeDocComparer : IEqualityComparer<TypeDoc>
    {
        public static readonly TypeDocComparer Instance = new();
        public bool Equals(TypeDoc? x, TypeDoc? y) => x?.Name == y?.Name && x!.Description.SequenceEqual(y!.Description);
        public int GetHashCode(TypeDoc obj) => obj.Name.GetHashCode();
    }
}
